/// A strict parser of the Prometheus text exposition format, version 0.0.4, for tests: it
/// rejects what Prometheus would reject and what the format's conventions forbid.
///
/// Checked: every line is a `# HELP`, a `# TYPE`, another comment, a blank line or a sample;
/// metric and label names match their grammars; label values use only the escapes `\\`, `\"`
/// and `\n`; a family has at most one HELP and one TYPE, its TYPE comes before its samples and
/// its samples are contiguous; no series (name plus label set) repeats; a label name does not
/// repeat in one sample; values are floats (or `+Inf`, `-Inf`, `NaN`); counters are not
/// negative; histograms have `_bucket` samples with an `le` label, cumulative counts that never
/// decrease as `le` grows, an `le="+Inf"` bucket equal to `_count`, and a `_sum`.
struct PrometheusTextParser {
  struct Sample: Hashable {
    var name: String
    var labels: [String: String]
    var value: Double
  }

  struct Family {
    var name: String
    var type: String = "untyped"
    var help: String?
    var samples: [Sample] = []
  }

  struct Failure: Error, CustomStringConvertible {
    var line: Int
    var reason: String
    var description: String { "line \(line): \(reason)" }
  }

  private(set) var families: [String: Family] = [:]
  private var order: [String] = []

  /// The value of the sample `name` with exactly `labels`, if present.
  func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
    families.values.lazy.flatMap(\.samples).first { $0.name == name && $0.labels == labels }?.value
  }

  static func parse(_ text: String) throws -> PrometheusTextParser {
    var parser = PrometheusTextParser()
    try parser.run(text)
    return parser
  }

  private mutating func run(_ text: String) throws {
    guard text.isEmpty || text.hasSuffix("\n") else {
      throw Failure(line: 0, reason: "the page must end with a line feed")
    }
    var seenSeries = Set<String>()
    var current: String?
    var closed = Set<String>()
    for (offset, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().enumerated() {
      let number = offset + 1
      let line = String(raw)
      func fail(_ reason: String) -> Failure { Failure(line: number, reason: reason) }
      if line.trimmingSpaces.isEmpty { continue }
      if line.hasPrefix("#") {
        let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 3, parts[0] == "#", parts[1] == "HELP" || parts[1] == "TYPE" else { continue }
        let name = parts[2]
        guard Self.isMetricName(name) else { throw fail("bad metric name '\(name)'") }
        var family = families[name] ?? Family(name: name)
        if families[name] == nil { order.append(name) }
        if closed.contains(name) || (family.samples.isEmpty == false) {
          throw fail("\(parts[1]) for '\(name)' after its samples")
        }
        if parts[1] == "HELP" {
          guard family.help == nil else { throw fail("second HELP for '\(name)'") }
          family.help = try Self.unescapeHelp(parts.count > 3 ? parts[3] : "", fail)
        } else {
          guard family.type == "untyped", parts.count == 4 else { throw fail("second or empty TYPE for '\(name)'") }
          guard ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
            throw fail("unknown type '\(parts[3])'")
          }
          family.type = parts[3]
        }
        families[name] = family
        continue
      }
      let sample = try Self.sample(line, fail)
      let familyName = familyOf(sample.name)
      if let current, current != familyName { closed.insert(current) }
      guard !closed.contains(familyName) else { throw fail("samples of '\(familyName)' are not contiguous") }
      current = familyName
      let series =
        sample.name + "{" + sample.labels.sorted { $0.key < $1.key }.map { "\($0)=\($1)" }.joined(separator: ",")
      guard seenSeries.insert(series).inserted else { throw fail("series \(series) repeats") }
      var family = families[familyName] ?? Family(name: familyName)
      if families[familyName] == nil { order.append(familyName) }
      if family.type == "counter" && !(sample.value >= 0) { throw fail("counter \(sample.name) is \(sample.value)") }
      family.samples.append(sample)
      families[familyName] = family
    }
    for family in families.values where family.type == "histogram" { try Self.checkHistogram(family) }
  }

  /// The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` belong to it.
  private func familyOf(_ name: String) -> String {
    for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
      let base = String(name.dropLast(suffix.count))
      if let family = families[base], family.type == "histogram" || family.type == "summary" { return base }
    }
    return name
  }

  private static func checkHistogram(_ family: Family) throws {
    func fail(_ reason: String) -> Failure { Failure(line: 0, reason: "histogram \(family.name): \(reason)") }
    var groups: [[String: String]: [(le: Double, count: Double)]] = [:]
    var counts: [[String: String]: Double] = [:]
    var sums: Set<[String: String]> = []
    for sample in family.samples {
      if sample.name == family.name + "_bucket" {
        guard let le = sample.labels["le"], let bound = Self.number(le) else { throw fail("bucket without a valid le") }
        var rest = sample.labels
        rest["le"] = nil
        groups[rest, default: []].append((bound, sample.value))
      } else if sample.name == family.name + "_count" {
        counts[sample.labels] = sample.value
      } else if sample.name == family.name + "_sum" {
        sums.insert(sample.labels)
      } else {
        throw fail("unexpected sample \(sample.name)")
      }
    }
    for (labels, buckets) in groups {
      guard buckets.map(\.le) == buckets.map(\.le).sorted() else { throw fail("buckets out of order for \(labels)") }
      for (previous, next) in zip(buckets, buckets.dropFirst()) where next.count < previous.count {
        throw fail("bucket le=\(next.le) count \(next.count) below le=\(previous.le)'s \(previous.count) for \(labels)")
      }
      guard let last = buckets.last, last.le == .infinity else { throw fail("no +Inf bucket for \(labels)") }
      guard counts[labels] == last.count else { throw fail("+Inf bucket \(last.count) != _count for \(labels)") }
      guard sums.contains(labels) else { throw fail("no _sum for \(labels)") }
    }
    guard Set(groups.keys) == Set(counts.keys) else { throw fail("_count without buckets, or buckets without _count") }
  }

  private static func sample(_ line: String, _ fail: (String) -> Failure) throws -> Sample {
    var rest = Substring(line)
    let name = String(rest.prefix { $0 != "{" && $0 != " " })
    guard isMetricName(name) else { throw fail("bad metric name '\(name)'") }
    rest = rest.dropFirst(name.count)
    var labels: [String: String] = [:]
    if rest.first == "{" {
      rest = rest.dropFirst()
      while rest.first != "}" {
        let labelName = String(rest.prefix { $0 != "=" })
        guard isLabelName(labelName) else { throw fail("bad label name '\(labelName)'") }
        rest = rest.dropFirst(labelName.count)
        guard rest.hasPrefix("=\"") else { throw fail("label \(labelName) without =\"") }
        rest = rest.dropFirst(2)
        var value = ""
        while true {
          guard let character = rest.first else { throw fail("unterminated label value") }
          rest = rest.dropFirst()
          if character == "\"" { break }
          if character == "\n" { throw fail("raw line feed in a label value") }
          if character == "\\" {
            guard let escaped = rest.first else { throw fail("dangling backslash") }
            rest = rest.dropFirst()
            switch escaped {
            case "\\": value.append("\\")
            case "\"": value.append("\"")
            case "n": value.append("\n")
            default: throw fail("bad escape \\\(escaped) in a label value")
            }
          } else {
            value.append(character)
          }
        }
        guard labels[labelName] == nil else { throw fail("label \(labelName) repeats") }
        labels[labelName] = value
        if rest.first == "," {
          rest = rest.dropFirst()
        } else if rest.first != "}" {
          throw fail("expected , or } after a label")
        }
      }
      rest = rest.dropFirst()
    }
    guard rest.first == " " else { throw fail("no space before the value") }
    let fields = rest.split(separator: " ")
    guard fields.count == 1 || fields.count == 2, let value = number(String(fields[0])) else {
      throw fail("bad value '\(rest)'")
    }
    if fields.count == 2 && Int64(fields[1]) == nil { throw fail("bad timestamp '\(fields[1])'") }
    return Sample(name: name, labels: labels, value: value)
  }

  static func number(_ text: String) -> Double? {
    switch text {
    case "+Inf": return .infinity
    case "-Inf": return -.infinity
    case "NaN": return .nan
    default:
      guard !text.isEmpty, text.allSatisfy({ "0123456789.eE+-".contains($0) }) else { return nil }
      return Double(text)
    }
  }

  static func isMetricName(_ name: String) -> Bool {
    guard let first = name.unicodeScalars.first, first.isNameStart || first == ":" else { return false }
    return name.unicodeScalars.allSatisfy { $0.isNameStart || $0 == ":" || ("0"..."9").contains($0) }
  }

  static func isLabelName(_ name: String) -> Bool {
    guard let first = name.unicodeScalars.first, first.isNameStart else { return false }
    return name.unicodeScalars.allSatisfy { $0.isNameStart || ("0"..."9").contains($0) }
  }

  private static func unescapeHelp(_ text: String, _ fail: (String) -> Failure) throws -> String {
    var out = ""
    var escaping = false
    for character in text {
      if escaping {
        switch character {
        case "\\": out.append("\\")
        case "n": out.append("\n")
        default: throw fail("bad escape \\\(character) in HELP")
        }
        escaping = false
      } else if character == "\\" {
        escaping = true
      } else {
        out.append(character)
      }
    }
    if escaping { throw fail("dangling backslash in HELP") }
    return out
  }
}

extension Unicode.Scalar {
  fileprivate var isNameStart: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) || self == "_" }
}

extension String {
  fileprivate var trimmingSpaces: Substring { drop { $0 == " " || $0 == "\t" } }
}
