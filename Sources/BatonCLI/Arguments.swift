import BatonClient
import BatonCore

/// A command line that did not make sense: exit status 2, the message on standard error.
struct UsageError: Error, Sendable, CustomStringConvertible {
  var message: String
  init(_ message: String) { self.message = message }
  var description: String { message }
}

/// What a command accepts: options that take a value, options that may repeat, switches, and
/// positional arguments (all required).
struct CommandSpec: Sendable {
  /// The words that run the command, e.g. `baton bench unary`.
  var path: String
  /// One line for command lists.
  var summary: String
  /// The full `--help` text.
  var help: String
  /// Options followed by a value (`--port 80` or `--port=80`).
  var valued: Set<String> = []
  /// Valued options that may be given several times.
  var repeatable: Set<String> = []
  /// Options without a value.
  var switches: Set<String> = []
  /// Names of the positional arguments, in order; every one is required.
  var positionals: [String] = []
}

/// A command line parsed against a ``CommandSpec``, with typed, checked accessors.
struct Arguments: Sendable {
  enum Parsed: Sendable {
    case help
    case run(Arguments)
  }

  private(set) var values: [String: [String]] = [:]
  private(set) var switches: Set<String> = []
  private(set) var positionals: [String] = []

  /// Parses `words` (the arguments after the command's own words). `--` ends the options.
  static func parse(_ words: ArraySlice<String>, _ spec: CommandSpec) throws(UsageError) -> Parsed {
    var result = Arguments()
    var index = words.startIndex
    var optionsEnded = false
    while index < words.endIndex {
      let word = words[index]
      index += 1
      if optionsEnded || !word.hasPrefix("-") || word == "-" {
        result.positionals.append(word)
        continue
      }
      if word == "--" {
        optionsEnded = true
        continue
      }
      if word == "--help" || word == "-h" { return .help }
      var name = word
      var inline: String?
      if let equals = word.firstIndex(of: "=") {
        name = String(word[..<equals])
        inline = String(word[word.index(after: equals)...])
      }
      if spec.switches.contains(name) {
        guard inline == nil else { throw UsageError("option '\(name)' takes no value") }
        result.switches.insert(name)
      } else if spec.valued.contains(name) {
        let value: String
        if let inline {
          value = inline
        } else {
          guard index < words.endIndex else { throw UsageError("option '\(name)' needs a value") }
          value = words[index]
          index += 1
        }
        if result.values[name] != nil && !spec.repeatable.contains(name) {
          throw UsageError("option '\(name)' given more than once")
        }
        result.values[name, default: []].append(value)
      } else {
        throw UsageError("unknown option '\(name)'")
      }
    }
    if result.positionals.count < spec.positionals.count {
      let missing = spec.positionals[result.positionals.count...].joined(separator: " ")
      throw UsageError("missing \(missing)")
    }
    if result.positionals.count > spec.positionals.count {
      throw UsageError("unexpected argument '\(result.positionals[spec.positionals.count])'")
    }
    return .run(result)
  }

  /// Whether switch `name` was given.
  func flag(_ name: String) -> Bool { switches.contains(name) }

  /// The value of option `name`, if given.
  func string(_ name: String) -> String? { values[name]?.last }

  /// Every value of a repeatable option, in order.
  func strings(_ name: String) -> [String] { values[name] ?? [] }

  /// An integer option within `range`; `fallback` when absent (nil fallback: the option is required).
  func int(_ name: String, default fallback: Int?, in range: ClosedRange<Int>) throws(UsageError) -> Int {
    guard let text = string(name) else {
      guard let fallback else { throw UsageError("option '\(name)' is required") }
      return fallback
    }
    guard let value = Int(text), range.contains(value) else {
      throw UsageError("option '\(name)' needs an integer in \(range.lowerBound)...\(range.upperBound), not '\(text)'")
    }
    return value
  }

  /// A number of seconds within `range`; `fallback` when absent (nil fallback: required).
  func seconds(_ name: String, default fallback: Double?, in range: ClosedRange<Double>) throws(UsageError) -> Double {
    guard let text = string(name) else {
      guard let fallback else { throw UsageError("option '\(name)' is required") }
      return fallback
    }
    guard let value = Double(text), value.isFinite, range.contains(value) else {
      throw UsageError(
        "option '\(name)' needs a number of seconds in \(Format.fixed(range.lowerBound, 0))...\(Format.fixed(range.upperBound, 0)), not '\(text)'"
      )
    }
    return value
  }

  /// The value of an option that must be one of `choices`.
  func choice(_ name: String, _ choices: [String], default fallback: String) throws(UsageError) -> String {
    guard let text = string(name) else { return fallback }
    guard choices.contains(text) else {
      throw UsageError("option '\(name)' must be one of \(choices.joined(separator: ", ")), not '\(text)'")
    }
    return text
  }

  /// `HOST:PORT` (or `[IPv6]:PORT`).
  static func endpoint(_ text: String, for what: String) throws(UsageError) -> Endpoint {
    guard let endpoint = Endpoint(text) else {
      throw UsageError("\(what) must be HOST:PORT, not '\(text)'")
    }
    return endpoint
  }
}
