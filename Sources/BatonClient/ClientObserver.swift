import BatonCore

/// What a client reports as it runs, for a metrics or tracing library of your choice
/// (swift-metrics, OpenTelemetry): the same facts ``Client/metricsPage`` counts, as they happen.
///
/// Set one with ``Client/Configuration/observer``. `observe` is called synchronously on the
/// thread where the event happened — the caller's task for a call's start, end, retry and
/// resumption, an event loop that also carries calls for a GOAWAY or a lost connection — so it
/// must be quick and must not block: increment a counter, record a timer, and return. A client
/// without an observer pays one branch per event.
public protocol ClientObserver: Sendable {
  /// Called once per event. A call's events come in order: ``ClientEvent/callStarted(method:)``,
  /// then any ``ClientEvent/retried(method:reason:)`` and ``ClientEvent/resumed(method:)``, then
  /// ``ClientEvent/callFinished(method:status:duration:)``.
  func observe(_ event: ClientEvent)
}

/// One thing a client did or saw.
///
/// Method names are as the caller passed them, not capped as ``Client/metricsPage``'s labels
/// are: bound them yourself if they come from outside your program. (`retried` and `resumed`
/// name the method the attempt was sent with, which a ``ClientInterceptor`` may have changed.)
public enum ClientEvent: Sendable {
  /// Why an attempt was repeated on another connection.
  public enum RetryReason: String, Sendable, Hashable {
    /// The server provably did not process the attempt (refused, or above a GOAWAY's last
    /// stream): retried transparently, for free.
    case notProcessed = "not_processed"
    /// The connection was lost and the call may have been processed; retried because it is
    /// ``CallOptions/idempotent``, taking from the client's retry budget.
    case idempotent
  }

  /// A call starts (before interceptors run, before waiting for a connection).
  case callStarted(method: String)
  /// A call ended as its caller saw it: `status` is nil for OK (an error that is not an
  /// ``RPCError`` counts as `unknown`), `duration` runs from its start, retries included.
  case callFinished(method: String, status: RPCError.Code?, duration: Duration)
  /// An attempt of the call is repeated on another connection.
  case retried(method: String, reason: RetryReason)
  /// A stream continued from the server's checkpoint on a new stream (protocol 1.1).
  case resumed(method: String)
  /// A server sent GOAWAY on a connection to `endpoint`.
  case goAwayReceived(endpoint: Endpoint)
  /// A ready connection to `endpoint` ended without GOAWAY (lost, reset, or silent past the
  /// keepalive).
  case connectionLost(endpoint: Endpoint)
}
