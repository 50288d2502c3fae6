public import BatonCore

/// Frame-level faults to inject between a client and a server, at chosen points, replayable from
/// a seed: the script a ``FaultProxy`` (or `baton proxy --faults`) follows.
///
/// A plan is a list of ``Fault``s. Each fault has an ``Action`` (what to do) and a ``Trigger``
/// (at which frame), and fires at most once, on one connection of the proxy (the first, unless
/// it names another). Every choice left open by the plan (a range of frame counts, where inside
/// a frame to cut, how to split a dripped frame) is drawn from ``seed``, so the same plan and
/// seed against the same traffic inject the same faults at the same frames: a failing test
/// replays.
///
/// The text form, one fault per `;` or line (`#` starts a comment):
///
/// ```
/// goaway last=3 after-opens=3
/// reset stream=5 code=cancel at-message=2
/// stall 500ms after-frames=10
/// cut mid-frame after-frames=20 from=server
/// ```
///
/// See ``syntax`` for every word.
public struct FaultPlan: Sendable, Hashable, CustomStringConvertible {
  /// The faults, in the order they were written; a fault's number in a trace is its index + 1.
  public var faults: [Fault]
  /// Decides every choice the plan leaves open.
  public var seed: UInt64

  /// A plan of `faults`.
  public init(_ faults: [Fault] = [], seed: UInt64 = 0) {
    self.faults = faults
    self.seed = seed
  }

  /// No faults: the proxy forwards every byte unchanged.
  public static let none = FaultPlan()

  /// Parses the text form (see ``syntax``).
  /// - Throws: ``ParseError`` naming the line, column and what was wrong; never traps.
  public init(parsing text: String, seed: UInt64 = 0) throws(ParseError) {
    self.init(try FaultPlanParser(text).parse(), seed: seed)
  }

  /// One fault per line, in the text form.
  public var description: String { faults.map(\.description).joined(separator: "\n") }

  /// Which side sent a frame.
  public enum Side: String, Sendable, Hashable, CustomStringConvertible {
    /// The side that opened the connection.
    case client
    /// The side the proxy forwards to.
    case server
    /// `client` or `server`, as in the text form.
    public var description: String { rawValue }
  }

  /// A count written either as a number or as a range `A..B`, drawn from the seed.
  public enum Count: Sendable, Hashable, CustomStringConvertible {
    /// This number.
    case exactly(Int)
    /// A number in this closed range, drawn from the plan's seed for each connection.
    case between(Int, Int)
    /// `N` or `A..B`, as in the text form.
    public var description: String {
      switch self {
      case .exactly(let value): "\(value)"
      case .between(let low, let high): "\(low)..\(high)"
      }
    }
  }

  /// The frame at which a fault fires. Counts are per connection; frames are counted per side,
  /// in the order that side sent them, so a trigger does not depend on how the two directions
  /// interleave.
  public enum Trigger: Sendable, Hashable, CustomStringConvertible {
    /// When the connection is set up, before any frame.
    case start
    /// At the n-th frame `from` a side (the preface is not a frame).
    case afterFrames(Count, from: Side)
    /// At the client's n-th OPEN.
    case afterOpens(Count)
    /// When `stream` has sent its n-th message from `from` (a DATA with END_MESSAGE); message 0
    /// is the stream's OPEN (client side only).
    case atMessage(stream: UInt32, Int, from: Side)

    /// The trigger in the text form.
    public var description: String {
      switch self {
      case .start: "after-frames=0"
      case .afterFrames(let count, let side): "after-frames=\(count)" + (side == .client ? "" : " from=server")
      case .afterOpens(let count): "after-opens=\(count)"
      case .atMessage(let stream, let message, let side):
        "stream=\(stream) at-message=\(message)" + (side == .client ? "" : " from=server")
      }
    }
  }

  /// What a fault does. GOAWAY and RESET are sent to the client as if the server sent them, and
  /// the proxy keeps the server consistent with what they claim (see each case). A stream kept
  /// from the server gets no answer until its fault fires: a call whose stream never reaches
  /// the trigger waits for its deadline, as it would on a server that never read it.
  public enum Action: Sendable, Hashable {
    /// GOAWAY(last stream id, code) to the client. With an explicit `last`, the server never sees
    /// any stream above it: from the connection's start the proxy discards those streams' frames
    /// (returning their connection credit to the client), so that when the GOAWAY says "not
    /// processed" it is true and the client's transparent retry is safe. Without `last`, the
    /// GOAWAY names the highest stream already forwarded. Either way, OPENs above the last id
    /// that still arrive are answered with RESET REFUSED_STREAM, as a stopping server does.
    case goAway(lastStreamID: UInt32?, code: ErrorCode)
    /// RESET of `stream` to the client. REFUSED_STREAM claims the stream was not processed, so
    /// the proxy never forwards that stream's frames to the server; CANCEL also cancels it on
    /// the server (a RESET CANCEL goes there too).
    case reset(stream: UInt32, code: ErrorCode)
    /// Closes both sockets with no GOAWAY, after forwarding the triggering frame, or only part of
    /// it when `midFrame` (how much is drawn from the seed).
    case cut(midFrame: Bool)
    /// Stops forwarding in both directions for a while (bytes wait in the proxy and the kernel).
    case stall(Duration)
    /// Drops the next `count` PING ACKs sent by the trigger's side.
    case withholdPingAck(count: Int)
    /// Holds each of `frames` frames of the trigger's side (0: all remaining) for `by` before
    /// forwarding it, starting with the triggering frame.
    case delay(Duration, frames: Int)
    /// Writes each of `frames` frames of the trigger's side (0: all remaining) in pieces of 1 to
    /// `maxPiece` bytes (sizes drawn from the seed), `every` apart.
    case drip(maxPiece: Int, every: Duration, frames: Int)
  }

  /// One fault: an action at a trigger, on the `connection`-th connection the proxy accepts.
  public struct Fault: Sendable, Hashable, CustomStringConvertible {
    /// What it does.
    public var action: Action
    /// At which frame.
    public var trigger: Trigger
    /// 1 for the first connection the proxy accepts.
    public var connection: Int

    /// A fault doing `action` at `trigger` on the `connection`-th connection.
    public init(_ action: Action, at trigger: Trigger = .start, connection: Int = 1) {
      self.action = action
      self.trigger = trigger
      self.connection = connection
    }

    /// The fault in the text form; parsing it gives the fault back.
    public var description: String {
      var words: [String]
      switch action {
      case .goAway(let last, let code):
        words = ["goaway"] + (last.map { ["last=\($0)"] } ?? []) + (code == .noError ? [] : ["code=\(code.planName)"])
      case .reset(let stream, let code):
        words = ["reset", "code=\(code.planName)"]
        if case .atMessage(stream, _, _) = trigger {} else { words.append("stream=\(stream)") }
      case .cut(let midFrame): words = midFrame ? ["cut", "mid-frame"] : ["cut"]
      case .stall(let duration): words = ["stall", duration.planText]
      case .withholdPingAck(let count): words = ["withhold-ping-ack", "count=\(count)"]
      case .delay(let duration, let frames): words = ["delay", duration.planText, "frames=\(frames)"]
      case .drip(let piece, let every, let frames):
        words = ["drip", "bytes=\(piece)", "every=\(every.planText)", "frames=\(frames)"]
      }
      words.append(trigger.description)
      if connection != 1 { words.append("connection=\(connection)") }
      return words.joined(separator: " ")
    }
  }

  /// A plan text that could not be read: where, and why.
  public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
    /// 1-based line and column of the offending word.
    public var line: Int
    public var column: Int
    /// What was wrong, and what was expected.
    public var message: String
    /// `fault plan, line L, column C: message`.
    public var description: String { "fault plan, line \(line), column \(column): \(message)" }
  }

  /// The text syntax, as printed by `baton proxy --help`.
  public static let syntax = """
    A plan is a list of faults separated by ';' or new lines ('#' starts a comment). Each fault
    is an action, then options as key=value, and fires at most once:

      goaway [last=N] [code=no-error|protocol-error|internal-error|enhance-your-calm]
          GOAWAY to the client. With last=N the server never sees streams above N (the proxy
          drops them from the start), so the client may retry them; without it, N is the
          highest stream forwarded so far. Later OPENs above N get RESET REFUSED_STREAM.
      reset stream=N code=refused|cancel
          RESET of stream N to the client. 'refused' means not processed: the server never
          sees stream N. 'cancel' also cancels it on the server.
      cut [mid-frame]
          close both connections, no GOAWAY; mid-frame forwards only part of the triggering
          frame (how much is drawn from the seed)
      stall DURATION
          forward nothing, either way, for DURATION
      withhold-ping-ack [count=N]
          drop the next N PING ACKs (default 1) of the trigger's side
      delay DURATION [frames=N]
          hold each of the next N frames (default 0: all) of the trigger's side
      drip [bytes=N] [every=DURATION] [frames=N]
          write each of the next N frames (default 1) in pieces of 1..N bytes (default 1)
          every DURATION (default 10ms)

    Where it fires (default: when the connection is set up):
      after-opens=N            at the client's N-th OPEN
      after-frames=N           at the N-th frame of the side given by from= (default client)
      stream=S at-message=M    when stream S has sent its M-th message (0: its OPEN)
      from=client|server       whose frames the trigger counts
      connection=N             on the N-th connection the proxy accepts (default 1)

    A count may be a range A..B, drawn from the seed. DURATION is a number with ms or s.
    Example: goaway last=3 after-opens=3; reset stream=5 code=cancel at-message=2;
             stall 500ms after-frames=10; cut mid-frame after-frames=20
    """
}

extension ErrorCode {
  /// The lower-case, dashed name a plan uses (`refused`, `cancel`, `no-error`...).
  var planName: String {
    switch self {
    case .refusedStream: "refused"
    case .cancel: "cancel"
    default: description.lowercased().replacingOccurrences("_", "-")
    }
  }
}

extension String {
  fileprivate func replacingOccurrences(_ target: Character, _ replacement: Character) -> String {
    String(map { $0 == target ? replacement : $0 })
  }
}

extension Duration {
  /// `250ms` or `2s`: the plan's way of writing a duration.
  var planText: String {
    let milliseconds = components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    return milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
  }
}

/// Reads the text form of a plan word by word, remembering where each word started.
struct FaultPlanParser {
  private struct Word {
    var text: Substring
    var line: Int
    var column: Int
  }

  private let statements: [[Word]]

  init(_ text: String) {
    var statements: [[Word]] = []
    var current: [Word] = []
    var line = 1
    var column = 1
    var wordStart: (String.Index, Int)?
    var inComment = false
    var index = text.startIndex
    func endWord(at end: String.Index) {
      if let (start, startColumn) = wordStart {
        current.append(Word(text: text[start..<end], line: line, column: startColumn))
        wordStart = nil
      }
    }
    while index < text.endIndex {
      let character = text[index]
      if character == "\n" || character == ";" {
        endWord(at: index)
        if !current.isEmpty { statements.append(current) }
        current = []
        if character == "\n" {
          line += 1
          column = 0
          inComment = false
        }
      } else if inComment {
      } else if character == "#" {
        endWord(at: index)
        inComment = true
      } else if character.isWhitespace {
        endWord(at: index)
      } else if wordStart == nil {
        wordStart = (index, column)
      }
      column += 1
      index = text.index(after: index)
    }
    endWord(at: text.endIndex)
    if !current.isEmpty { statements.append(current) }
    self.statements = statements
  }

  func parse() throws(FaultPlan.ParseError) -> [FaultPlan.Fault] {
    var faults: [FaultPlan.Fault] = []
    for statement in statements { faults.append(try fault(statement)) }
    return faults
  }

  private func fail(_ word: Word, _ message: String) -> FaultPlan.ParseError {
    FaultPlan.ParseError(line: word.line, column: word.column, message: message)
  }

  private static let actionKeys: [String: Set<String>] = [
    "goaway": ["last", "code"],
    "reset": ["stream", "code"],
    "cut": [],
    "stall": [],
    "withhold-ping-ack": ["count"],
    "delay": ["frames"],
    "drip": ["bytes", "every", "frames"],
  ]
  private static let triggerKeys: Set<String> = [
    "after-opens", "after-frames", "stream", "at-message", "from", "connection",
  ]

  private func fault(_ words: [Word]) throws(FaultPlan.ParseError) -> FaultPlan.Fault {
    let head = words[0]
    let name = String(head.text)
    guard let allowed = Self.actionKeys[name] else {
      throw fail(
        head,
        "unknown action '\(name)' (expected one of: \(Self.actionKeys.keys.sorted().joined(separator: ", ")))")
    }
    var options: [String: Word] = [:]
    var positionals: [Word] = []
    for word in words.dropFirst() {
      guard let equals = word.text.firstIndex(of: "=") else {
        positionals.append(word)
        continue
      }
      let key = String(word.text[..<equals])
      let value = word.text[word.text.index(after: equals)...]
      guard allowed.contains(key) || Self.triggerKeys.contains(key) else {
        let keys = (allowed.sorted() + Self.triggerKeys.sorted()).joined(separator: ", ")
        throw fail(word, "unknown option '\(key)' for \(name) (expected one of: \(keys))")
      }
      guard options[key] == nil else { throw fail(word, "option '\(key)' given twice") }
      guard !value.isEmpty else { throw fail(word, "option '\(key)' needs a value") }
      var valueWord = word
      valueWord.text = value
      valueWord.column += key.count + 1
      options[key] = valueWord
    }

    let trigger = try self.trigger(options, head: head)
    let connection =
      try options["connection"].map { word throws(FaultPlan.ParseError) in
        try integer(word, in: 1...1_000_000, what: "connection")
      } ?? 1

    let action: FaultPlan.Action
    switch name {
    case "goaway":
      try noPositionals(positionals, name)
      let last = try options["last"].map { word throws(FaultPlan.ParseError) in
        UInt32(try integer(word, in: 0...Int(StreamID.max), what: "last"))
      }
      let code =
        try options["code"].map { word throws(FaultPlan.ParseError) in
          try errorCode(word, ["no-error", "protocol-error", "internal-error", "enhance-your-calm"])
        } ?? .noError
      action = .goAway(lastStreamID: last, code: code)
    case "reset":
      try noPositionals(positionals, name)
      guard let streamWord = options["stream"] else { throw fail(head, "reset needs stream=N") }
      let stream = try streamID(streamWord)
      guard let codeWord = options["code"] else { throw fail(head, "reset needs code=refused or code=cancel") }
      let code = try errorCode(codeWord, ["refused", "cancel"])
      if code == .refusedStream, case .atMessage(_, _, .server) = trigger {
        throw fail(
          options["from"] ?? head,
          "reset code=refused cannot wait for the server's messages: refused means the server never saw the stream")
      }
      if code == .refusedStream, case .afterFrames(_, .server) = trigger {
        throw fail(options["from"] ?? head, "reset code=refused needs a trigger on the client's side")
      }
      action = .reset(stream: stream, code: code)
    case "cut":
      var midFrame = false
      for word in positionals {
        guard word.text == "mid-frame", !midFrame else {
          throw fail(word, "unexpected '\(word.text)' (cut takes only 'mid-frame')")
        }
        midFrame = true
      }
      action = .cut(midFrame: midFrame)
    case "stall":
      action = .stall(try oneDuration(positionals, head: head, name))
    case "withhold-ping-ack":
      try noPositionals(positionals, name)
      let count =
        try options["count"].map { word throws(FaultPlan.ParseError) in
          try integer(word, in: 1...1_000_000, what: "count")
        } ?? 1
      action = .withholdPingAck(count: count)
    case "delay":
      let duration = try oneDuration(positionals, head: head, name)
      let frames =
        try options["frames"].map { word throws(FaultPlan.ParseError) in
          try integer(word, in: 0...1_000_000_000, what: "frames")
        } ?? 0
      action = .delay(duration, frames: frames)
    default:  // drip
      try noPositionals(positionals, name)
      let bytes =
        try options["bytes"].map { word throws(FaultPlan.ParseError) in
          try integer(word, in: 1...(1 << 24), what: "bytes")
        } ?? 1
      let every =
        try options["every"].map { word throws(FaultPlan.ParseError) in try duration(word) } ?? .milliseconds(10)
      let frames =
        try options["frames"].map { word throws(FaultPlan.ParseError) in
          try integer(word, in: 0...1_000_000_000, what: "frames")
        } ?? 1
      action = .drip(maxPiece: bytes, every: every, frames: frames)
    }
    return FaultPlan.Fault(action, at: trigger, connection: connection)
  }

  private func trigger(_ options: [String: Word], head: Word) throws(FaultPlan.ParseError) -> FaultPlan.Trigger {
    var side = FaultPlan.Side.client
    if let word = options["from"] {
      guard let parsed = FaultPlan.Side(rawValue: String(word.text)) else {
        throw fail(word, "from must be client or server, not '\(word.text)'")
      }
      side = parsed
    }
    let given = ["after-opens", "after-frames", "at-message"].compactMap { options[$0] }.sorted {
      ($0.line, $0.column) < ($1.line, $1.column)
    }
    if given.count > 1 {
      throw fail(given[1], "a fault has one trigger: after-opens, after-frames or at-message")
    }
    if let word = options["after-opens"] {
      if options["from"]?.text == "server" {
        throw fail(word, "after-opens counts the client's OPENs; drop from=server")
      }
      return .afterOpens(try count(word, what: "after-opens", minimum: 1))
    }
    if let word = options["after-frames"] {
      let frames = try count(word, what: "after-frames", minimum: 0)
      return frames == .exactly(0) && side == .client ? .start : .afterFrames(frames, from: side)
    }
    if let word = options["at-message"] {
      guard let streamWord = options["stream"] else { throw fail(word, "at-message needs stream=S") }
      let message = try integer(word, in: side == .client ? 0...1_000_000_000 : 1...1_000_000_000, what: "at-message")
      return .atMessage(stream: try streamID(streamWord), message, from: side)
    }
    if let word = options["stream"], String(head.text) != "reset" {
      throw fail(word, "stream= needs at-message=M")
    }
    if String(head.text) == "reset", let word = options["stream"] {
      // A reset with no other trigger fires at the stream's OPEN.
      return .atMessage(stream: try streamID(word), 0, from: .client)
    }
    if let word = options["from"], side == .server { throw fail(word, "from=server needs after-frames or at-message") }
    return .start
  }

  private func noPositionals(_ words: [Word], _ name: String) throws(FaultPlan.ParseError) {
    if let word = words.first { throw fail(word, "unexpected '\(word.text)' (\(name) takes only key=value options)") }
  }

  private func oneDuration(_ words: [Word], head: Word, _ name: String) throws(FaultPlan.ParseError) -> Duration {
    guard let word = words.first else { throw fail(head, "\(name) needs a duration, e.g. '\(name) 500ms'") }
    if words.count > 1 { throw fail(words[1], "unexpected '\(words[1].text)' after the duration") }
    return try duration(word)
  }

  private func duration(_ word: Word) throws(FaultPlan.ParseError) -> Duration {
    let text = word.text
    let (digits, scale): (Substring, Int64) =
      text.hasSuffix("ms") ? (text.dropLast(2), 1) : text.hasSuffix("s") ? (text.dropLast(1), 1000) : ("", 0)
    guard scale > 0, let value = Int64(digits), value >= 0, value <= 86_400_000 / scale else {
      throw fail(word, "'\(text)' is not a duration (a whole number with ms or s, at most a day)")
    }
    return .milliseconds(value * scale)
  }

  private func integer(_ word: Word, in range: ClosedRange<Int>, what: String) throws(FaultPlan.ParseError) -> Int {
    guard let value = Int(word.text), range.contains(value) else {
      throw fail(
        word, "\(what) must be a whole number in \(range.lowerBound)...\(range.upperBound), not '\(word.text)'")
    }
    return value
  }

  private func count(_ word: Word, what: String, minimum: Int) throws(FaultPlan.ParseError) -> FaultPlan.Count {
    let range = minimum...1_000_000_000
    guard let dots = word.text.firstRange(of: "..") else { return .exactly(try integer(word, in: range, what: what)) }
    var low = word
    low.text = word.text[..<dots.lowerBound]
    var high = word
    high.text = word.text[dots.upperBound...]
    high.column += low.text.count + 2
    let lower = try integer(low, in: range, what: what)
    let upper = try integer(high, in: range, what: what)
    guard lower <= upper else { throw fail(word, "\(what) range \(word.text) is empty") }
    return lower == upper ? .exactly(lower) : .between(lower, upper)
  }

  private func streamID(_ word: Word) throws(FaultPlan.ParseError) -> UInt32 {
    let value = try integer(word, in: 1...Int(StreamID.max), what: "stream")
    guard value % 2 == 1 else { throw fail(word, "stream must be odd (clients open odd streams), not \(value)") }
    return UInt32(value)
  }

  private func errorCode(_ word: Word, _ names: [String]) throws(FaultPlan.ParseError) -> ErrorCode {
    let text = String(word.text)
    let aliases: [String: ErrorCode] = [
      "refused": .refusedStream, "refused-stream": .refusedStream, "cancel": .cancel, "no-error": .noError,
      "protocol-error": .protocolError, "internal-error": .internalError, "enhance-your-calm": .enhanceYourCalm,
    ]
    guard let code = aliases[text], names.contains(code.planName) else {
      throw fail(word, "code must be one of \(names.joined(separator: ", ")), not '\(text)'")
    }
    return code
  }
}
