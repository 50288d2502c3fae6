import BatonCore
import BatonPosix

/// Collects what a command writes, for tests: pass ``output`` to ``CLI/main(_:output:)`` and read
/// ``standardOutput`` and ``standardError`` afterwards.
public final class CapturedOutput: Sendable {
  private let text = Locked<(out: String, err: String)>(("", ""))

  public init() {}

  /// An output whose text lands in this object.
  public var output: Output {
    Output { [self] destination, chunk in
      text.withLock { text in
        switch destination {
        case .standardOutput: text.out += chunk
        case .standardError: text.err += chunk
        }
      }
    }
  }

  /// Everything written to standard output so far.
  public var standardOutput: String { text.withLock { $0.out } }

  /// Everything written to standard error so far.
  public var standardError: String { text.withLock { $0.err } }
}
