import BatonCore

/// What a stop did: how long each phase took, what drained, what had to be cut, how each hook
/// went. Returned by ``Server/gracefulStop(deadline:)`` and logged line by line.
public struct StopReport: Sendable, CustomStringConvertible {
  /// One phase of the stop and how long it took.
  public struct Phase: Sendable, Hashable {
    /// `draining`, `cancelling`, `closing` (hooks).
    public var name: String
    /// How long the phase took.
    public var duration: Duration
  }

  /// A call the stop had to end with `unavailable`.
  public struct CutStream: Sendable, Hashable {
    /// The method of the call.
    public var method: String
    /// How long the stream had been open when it was cut.
    public var age: Duration
    /// The client that made it.
    public var peer: String
  }

  /// A shutdown hook or background worker, as it stopped.
  public struct Hook: Sendable, Hashable {
    /// How it ended: on its own, by throwing, or cut off by its timeout.
    public enum Outcome: Sendable, Hashable {
      case finished
      case failed(String)
      case timedOut
    }
    /// The name it was registered with.
    public var name: String
    /// How long it ran.
    public var duration: Duration
    /// How it ended.
    public var outcome: Outcome
  }

  /// Each phase that ran, in order.
  public var phases: [Phase] = []
  /// Calls that were running when the stop began, or arrived during the drain, and finished.
  public var drainedStreams = 0
  /// Streams of resumable methods the drain ended at a checkpoint, for their clients to continue
  /// on another server (PROTOCOL.md 18.3): not cut, not finished here.
  public var migratedStreams = 0
  /// Calls still running at the deadline, ended with `unavailable`.
  public var cutStreams: [CutStream] = []
  /// Why streams were cut, when some were: the drain deadline passed, or a hard stop (a second
  /// signal, ``Server/stopNow()``, cancelling ``Server/run()``) came first.
  public var cutCause: CutCause?

  /// Why a stop cut streams.
  public enum CutCause: String, Sendable, Hashable, CustomStringConvertible {
    case deadline
    case stoppedAtOnce = "stopped at once"
    /// As in logs: `deadline` or `stopped at once`.
    public var description: String { rawValue }
  }
  /// Each hook and worker in the order they stopped (reverse registration).
  public var hooks: [Hook] = []
  /// From the first instant of the stop to `run()` returning.
  public var total: Duration = .zero

  /// True when every stream finished on its own: the stop failed no call.
  public var isClean: Bool { cutStreams.isEmpty }

  /// One line for logs: `total=... drained=N cut=N` and each phase.
  public var description: String {
    var parts = ["total=\(total.readable)", "drained=\(drainedStreams)", "cut=\(cutStreams.count)"]
    if migratedStreams > 0 { parts.insert("migrated=\(migratedStreams)", at: 2) }
    parts += phases.map { "\($0.name)=\($0.duration.readable)" }
    return parts.joined(separator: " ")
  }
}
