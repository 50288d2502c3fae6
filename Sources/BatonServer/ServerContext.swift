import BatonCore
import BatonPosix
import Synchronization

/// What a handler knows about its call, and how it shapes the response's metadata.
public final class ServerContext: Sendable {
  /// The method name the client called.
  public let method: String
  /// The client's metadata.
  public let requestMetadata: Metadata
  /// The client's address.
  public let peer: String
  /// How long the client gave the call, if it set a deadline; the server cancels the handler
  /// (Swift task cancellation) when it passes and answers `deadlineExceeded`.
  public let timeout: Duration?
  /// When the client's deadline passes (MonotonicClock ns), 0 without one.
  let deadline: UInt64

  private let drain: DrainSignal
  /// Shared with the context an interceptor chain made for the handler (``with(requestMetadata:)``).
  private let response: Locked<ResponseMetadata>
  /// Set once the response metadata went out: later writes skip the lock.
  private let headersSent = Atomic<Bool>(false)

  private struct ResponseMetadata {
    var headers = Metadata()
    var headersSent = false
    var trailers = Metadata()
  }

  init(
    method: String, requestMetadata: Metadata, peer: String, timeout: Duration?, deadline: UInt64 = 0,
    drain: DrainSignal
  ) {
    self.method = method
    self.requestMetadata = requestMetadata
    self.peer = peer
    self.timeout = timeout
    self.deadline = deadline
    self.drain = drain
    self.response = Locked(ResponseMetadata())
  }

  private init(_ other: ServerContext, requestMetadata: Metadata) {
    self.method = other.method
    self.requestMetadata = requestMetadata
    self.peer = other.peer
    self.timeout = other.timeout
    self.deadline = other.deadline
    self.drain = other.drain
    self.response = other.response
  }

  /// The handler's context after an interceptor changed the request metadata: the same call,
  /// sharing its response and trailing metadata.
  func with(requestMetadata: Metadata) -> ServerContext {
    requestMetadata == self.requestMetadata ? self : ServerContext(self, requestMetadata: requestMetadata)
  }

  /// How long the client's deadline has left (zero once it passed), nil if it set none. Pass it
  /// on as the timeout of a call this handler makes, so that work for a caller who has given up
  /// stops everywhere at once (see "deadline propagation" in README).
  public var remainingTime: Duration? {
    guard timeout != nil else { return nil }
    let now = MonotonicClock.now()
    return .nanoseconds(deadline > now ? deadline - now : 0)
  }

  /// True once the server has begun a graceful stop. The call may still run to completion; a
  /// long-lived stream should finish (or tell its client to move) soon.
  public var isDraining: Bool { drain.isFired }

  /// Returns when the server begins a graceful stop (at once if it already has, or if the
  /// handler's task is cancelled). Race it against your work to end long streams early.
  public func waitForDrain() async { await drain.wait() }

  /// Metadata sent before the first response message. Ignored once a message was sent.
  public func setResponseMetadata(_ metadata: Metadata) {
    response.withLock { $0.headers = metadata }
  }

  /// Metadata sent with the final status.
  public func setTrailingMetadata(_ metadata: Metadata) {
    response.withLock { $0.trailers = metadata }
  }

  /// The response metadata if it is still to be sent, marking it sent.
  func takeResponseHeaders() -> Metadata? {
    if headersSent.load(ordering: .relaxed) { return nil }
    headersSent.store(true, ordering: .relaxed)
    return response.withLock { state in
      guard !state.headersSent else { return nil }
      state.headersSent = true
      return state.headers.isEmpty ? nil : state.headers
    }
  }

  var trailingMetadata: Metadata { response.withLock { $0.trailers } }
}
