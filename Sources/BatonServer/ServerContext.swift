import BatonCore
import BatonPosix
import BatonTransport
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
  /// For a resumable method (``Router/serverStreaming(_:resumable:_:)``): the token of the
  /// checkpoint this call continues from, when the client resumed a stream that another server
  /// (or this one) ended; the handler sends what follows that checkpoint. nil for a new call,
  /// and for a call resumed from the start (before the stream's first checkpoint of its own).
  public let resumeToken: [UInt8]?
  /// The method was registered as resumable.
  let isResumable: Bool
  /// (resumable methods) Request messages the handler has read: what a checkpoint records.
  let requestsRead: RequestCounter?
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
    drain: DrainSignal, resumable: Bool = false
  ) {
    self.method = method
    self.peer = peer
    self.timeout = timeout
    self.deadline = deadline
    self.drain = drain
    self.isResumable = resumable
    self.requestsRead = resumable ? RequestCounter() : nil
    // The protocol's own name is not the application's metadata (PROTOCOL.md 5).
    if let encoded = requestMetadata[ResumableStreams.resumeKey] {
      let token = resumable ? ResumableStreams.decode(encoded) : nil
      self.resumeToken = token?.isEmpty == false ? token : nil
      self.requestMetadata = Metadata(requestMetadata.entries.filter { $0.name != ResumableStreams.resumeKey })
    } else {
      self.resumeToken = nil
      self.requestMetadata = requestMetadata
    }
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
    self.resumeToken = other.resumeToken
    self.isResumable = other.isResumable
    self.requestsRead = other.requestsRead
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

  /// Counts a resumable call's request messages as its handler reads them.
  final class RequestCounter: Sendable {
    let value = Atomic<UInt64>(0)
  }

  /// The drain ended this stream at a checkpoint: counted for the stop report.
  func noteMigrated() { drain.migrated.add(1, ordering: .relaxed) }

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
