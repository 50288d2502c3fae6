/// What a stop did: how long each phase took, what drained, what had to be cut, how each hook
/// went. Returned by ``Server/gracefulStop(deadline:)`` and logged line by line.
public struct StopReport: Sendable, CustomStringConvertible {
  public struct Phase: Sendable, Hashable {
    /// `draining`, `cancelling`, `closing` (hooks).
    public var name: String
    public var duration: Duration
  }

  public struct CutStream: Sendable, Hashable {
    public var method: String
    /// How long the stream had been open when it was cut.
    public var age: Duration
    public var peer: String
  }

  public struct Hook: Sendable, Hashable {
    public enum Outcome: Sendable, Hashable {
      case finished
      case failed(String)
      case timedOut
    }
    public var name: String
    public var duration: Duration
    public var outcome: Outcome
  }

  public var phases: [Phase] = []
  /// Calls that were running when the stop began, or arrived during the drain, and finished.
  public var drainedStreams = 0
  /// Calls still running at the deadline, ended with `unavailable`.
  public var cutStreams: [CutStream] = []
  /// Why streams were cut, when some were: the drain deadline passed, or a hard stop (a second
  /// signal, ``Server/stopNow()``, cancelling ``Server/run()``) came first.
  public var cutCause: CutCause?

  public enum CutCause: String, Sendable, Hashable, CustomStringConvertible {
    case deadline
    case stoppedAtOnce = "stopped at once"
    public var description: String { rawValue }
  }
  public var hooks: [Hook] = []
  public var total: Duration = .zero

  /// True when every stream finished on its own: the stop failed no call.
  public var isClean: Bool { cutStreams.isEmpty }

  public var description: String {
    var parts = ["total=\(total)", "drained=\(drainedStreams)", "cut=\(cutStreams.count)"]
    parts += phases.map { "\($0.name)=\($0.duration)" }
    return parts.joined(separator: " ")
  }
}
