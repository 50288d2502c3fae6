import BatonClient
import BatonCore

#if canImport(Glibc)
import Glibc
#endif

/// Where a command's text goes: standard output and standard error by default, or anywhere a
/// test wants (see ``CapturedOutput``).
///
/// Every call hands whole lines to the sink at once, so lines from several tasks never
/// interleave, and nothing is buffered: a parent process reading a pipe sees a line as soon as
/// it is written.
public struct Output: Sendable {
  /// The two text streams of a command.
  public enum Destination: Sendable, Hashable {
    case standardOutput
    case standardError
  }

  private let sink: @Sendable (Destination, String) -> Void
  /// Whether standard output is a terminal: progress lines are then redrawn in place with `\r`.
  public let isTerminal: Bool

  /// An output that hands every piece of text to `sink`.
  public init(isTerminal: Bool = false, _ sink: @escaping @Sendable (Destination, String) -> Void) {
    self.isTerminal = isTerminal
    self.sink = sink
  }

  /// The process's standard output and standard error, one unbuffered `write(2)` per call.
  public static var standard: Output {
    Output(isTerminal: isatty(1) == 1) { destination, text in
      writeAll(destination == .standardOutput ? 1 : 2, text)
    }
  }

  /// Writes `text` and a newline to standard output.
  func line(_ text: String) { sink(.standardOutput, text + "\n") }

  /// Writes `text` and a newline to standard error.
  func error(_ text: String) { sink(.standardError, text + "\n") }

  /// Writes `text` as is.
  func raw(_ text: String, to destination: Destination) { sink(destination, text) }

  /// A logger whose lines (`baton info draining ...`) go to standard error, each with `prefix`.
  func logger(prefix: String = "") -> Logger {
    Logger { record in self.error("\(prefix)baton \(record.level) \(record.line)") }
  }

  private static func writeAll(_ fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)
    bytes.withUnsafeMutableBytes { buffer in
      guard let base = buffer.baseAddress else { return }
      var offset = 0
      while offset < buffer.count {
        let written = write(fd, base + offset, buffer.count - offset)
        if written < 0 && errno == EINTR { continue }
        if written <= 0 { return }
        offset += written
      }
    }
  }
}
