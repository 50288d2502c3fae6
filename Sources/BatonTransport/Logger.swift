#if canImport(Glibc)
import Glibc
#endif

/// Baton's logging seam: one line per lifecycle event, never per message.
///
/// The default writes to standard error. To use swift-log instead, wrap a `Logging.Logger` in a
/// closure: `Logger { record in swiftLogger.log(level: ..., "\(record.message)") }`.
public struct Logger: Sendable {
  public enum Level: Int, Sendable, Comparable, CustomStringConvertible {
    case debug, info, warning, error
    public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    public var description: String { ["debug", "info", "warning", "error"][rawValue] }
  }

  public struct Record: Sendable {
    public var level: Level
    /// What happened, e.g. "draining".
    public var event: String
    /// Key/value details in the order given, e.g. [("connections", "3")].
    public var fields: [(String, String)]
    public var line: String {
      ([event] + fields.map { "\($0.0)=\($0.1)" }).joined(separator: " ")
    }
  }

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

  public func log(_ level: Level, _ event: String, _ fields: (String, String)...) {
    guard level >= minimumLevel else { return }
    sink(Record(level: level, event: event, fields: fields))
  }

  public func info(_ event: String, _ fields: (String, String)...) {
    guard Level.info >= minimumLevel else { return }
    sink(Record(level: .info, event: event, fields: fields))
  }

  public func warning(_ event: String, _ fields: (String, String)...) {
    guard Level.warning >= minimumLevel else { return }
    sink(Record(level: .warning, event: event, fields: fields))
  }
}
