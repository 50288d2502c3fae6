#if canImport(Glibc)
import Glibc
#endif

/// Baton's logging seam: one line per lifecycle event, never per message.
///
/// The default writes to standard error. To use swift-log instead, wrap a `Logging.Logger` in a
/// closure: `Logger { record in swiftLogger.log(level: ..., "\(record.message)") }`.
public struct Logger: Sendable {
  /// How much a record matters; a logger drops records below its ``minimumLevel``.
  public enum Level: Int, Sendable, Comparable, CustomStringConvertible {
    case debug, info, warning, error
    /// Ordered from `debug` to `error`.
    public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    /// The level's name as it appears in lines.
    public var description: String { ["debug", "info", "warning", "error"][rawValue] }
  }

  /// One lifecycle event, as handed to the sink: map `level`, `event` and `fields` onto your logging library's level, message and metadata.
  public struct Record: Sendable {
    /// How much it matters.
    public var level: Level
    /// What happened, e.g. "draining".
    public var event: String
    /// Key/value details in the order given, e.g. [("connections", "3")].
    public var fields: [(String, String)]
    /// `event key=value ...`: the record as one line of text.
    public var line: String {
      ([event] + fields.map { "\($0.0)=\($0.1)" }).joined(separator: " ")
    }
  }

  /// Records below this level are dropped before the sink sees them.
  public var minimumLevel: Level
  private let sink: @Sendable (Record) -> Void

  /// A logger that hands each record at or above `minimumLevel` to `sink`.
  public init(minimumLevel: Level = .info, _ sink: @escaping @Sendable (Record) -> Void) {
    self.minimumLevel = minimumLevel
    self.sink = sink
  }

  /// Lines like `baton info listening address=127.0.0.1:8080` on standard error.
  public static var standardError: Logger {
    Logger { record in
      // One write(2) per line, so lines from several threads never interleave.
      var text = Array("baton \(record.level) \(record.line)\n".utf8)
      _ = text.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
    }
  }

  /// Drops everything.
  public static var disabled: Logger { Logger(minimumLevel: .error) { _ in } }

  /// Hands a record to the sink if `level` is at or above ``minimumLevel``.
  public func log(_ level: Level, _ event: String, _ fields: (String, String)...) {
    guard level >= minimumLevel else { return }
    sink(Record(level: level, event: event, fields: fields))
  }

  /// A lifecycle event: listening, draining, drained, stopped, a hook's duration.
  public func info(_ event: String, _ fields: (String, String)...) {
    guard Level.info >= minimumLevel else { return }
    sink(Record(level: .info, event: event, fields: fields))
  }

  /// Something an operator should look at: a cut stream, a refused connection.
  public func warning(_ event: String, _ fields: (String, String)...) {
    guard Level.warning >= minimumLevel else { return }
    sink(Record(level: .warning, event: event, fields: fields))
  }
}
