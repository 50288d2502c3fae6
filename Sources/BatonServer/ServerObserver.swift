import BatonCore

/// What a server reports as it runs, for a metrics or tracing library of your choice
/// (swift-metrics, OpenTelemetry): the same facts `GET /metrics` counts, as they happen.
///
/// Set one with ``Server/Configuration/observer``. `observe` is called synchronously on the
/// thread where the event happened — often an event loop that also carries calls — so it must
/// be quick and must not block: increment a counter, record a timer, and return.
public protocol ServerObserver: Sendable {
  /// Called once per event, in the order they happen on each connection.
  func observe(_ event: ServerEvent)
}

/// One thing a server did or saw.
///
/// Method names are the router's, or `"unknown"` for every name it does not have, so that
/// labels derived from them stay bounded whatever clients send.
public enum ServerEvent: Sendable {
  /// A call was accepted and its handler (or its `unimplemented` answer) starts.
  case callStarted(method: String)
  /// A call ended: `status` is nil for OK, `duration` runs from its OPEN to its handler's end.
  case callFinished(method: String, status: RPCError.Code?, duration: Duration)
  /// A connection was accepted.
  case connectionOpened(peer: String)
  /// A connection closed.
  case connectionClosed(peer: String)
  /// The server sent GOAWAY on a connection (to drain, refuse or close it).
  case goAwaySent(peer: String)
  /// A client sent GOAWAY.
  case goAwayReceived(peer: String)
  /// A connection's drain ended with its close; `duration` runs from its first GOAWAY.
  case connectionDrained(peer: String, duration: Duration)
  /// Calls were ended before their handlers finished: `reason` is `"call_deadline"` (the
  /// client's deadline passed) or `"stop"` (the server's stop or a connection's max age).
  case streamsCut(count: Int, reason: String)
}
