import BatonCore
import BatonPosix
import BatonTransport
import Synchronization

/// What runs for every call: find the handler, run it on the connection's loop, answer.
///
/// Kept apart from ``Server`` so that the per-call path retains no object that is also
/// referenced weakly anywhere (a weak reference gives an object a side table, which slows every
/// retain and release of it).
final class CallDispatcher: Sendable {
  let router: Router
  let drainSignal = DrainSignal()
  let drainedCalls = Atomic<Int>(0)
  let exposeErrorDetails: Bool
  let logger: Logger
  /// nil when the configuration turned metrics off.
  let metrics: ServerMetrics?
  let observer: (any ServerObserver)?
  /// Whether a call's end is timed and counted at all (metrics or an observer).
  private let measures: Bool
  /// Whether there is an observer (a Bool is cheaper to test than the optional existential).
  private let observes: Bool

  init(
    router: Router, exposeErrorDetails: Bool, logger: Logger, collectsMetrics: Bool = true,
    observer: (any ServerObserver)? = nil
  ) {
    self.router = router
    self.exposeErrorDetails = exposeErrorDetails
    self.logger = logger
    self.metrics = collectsMetrics ? ServerMetrics(methods: router.registrationOrder) : nil
    self.observer = observer
    self.measures = collectsMetrics || observer != nil
    self.observes = observer != nil
  }

  /// A call starts: counted, and told to the observer. `index` is nil for an unknown method.
  private func started(_ index: Int?, _ method: String) {
    metrics?.counts(index).callStarted()
    if observes, let observer {
      observer.observe(.callStarted(method: index == nil ? ServerMetrics.unknownMethod : method))
    }
  }

  /// A call ended with wire status `status` after `nanoseconds`.
  private func finished(_ index: Int?, _ method: String, status: UInt8, nanoseconds: UInt64) {
    metrics?.counts(index).callEnded(status: status, nanoseconds: nanoseconds)
    if observes, let observer {
      observer.observe(
        .callFinished(
          method: index == nil ? ServerMetrics.unknownMethod : method, status: RPCError.Code(wireStatus: status),
          duration: .nanoseconds(nanoseconds)))
    }
  }

  /// Called on the stream's loop thread, as the connection acts on the OPEN it just read (the
  /// handler starts in place there).
  func serve(_ stream: StreamHandle, _ head: RequestHead) {
    guard let registered = router.handlers[head.method] else {
      if measures { started(nil, head.method) }
      stream.finish(
        Trailers(RPCError(code: .unimplemented, message: "this server has no method named '\(head.method)'")))
      stream.release()
      if measures { finished(nil, head.method, status: RPCError.Code.unimplemented.rawValue, nanoseconds: 0) }
      return
    }
    let handler = registered.handler
    let now = MonotonicClock.now()
    var timeout: Duration?
    var deadline: UInt64 = 0
    if head.timeoutMicroseconds > 0 {
      let nanos = head.timeoutMicroseconds.multipliedReportingOverflow(by: 1_000)
      let timeoutNanos = nanos.overflow ? UInt64.max / 2 : nanos.partialValue
      timeout = .nanoseconds(timeoutNanos)
      deadline = now &+ timeoutNanos
      stream.setDeadline(at: deadline, timeout: timeoutNanos)
    }
    let context = ServerContext(
      method: head.method, requestMetadata: head.metadata, peer: stream.connection.peer, timeout: timeout,
      deadline: deadline,
      drain: drainSignal,
      resumable: !router.resumableMethods.isEmpty && router.resumableMethods.contains(head.method))
    // Run the handler on the connection's own loop: no thread hop between the frame that opened
    // the stream, the handler, and the flush of its response. It starts in place (this is the
    // loop's thread, acting on what it just read, with no lock held), so a handler that does not
    // suspend, like most unary ones, runs to its reply without being queued on the loop first;
    // one that suspends resumes on the loop. Counted as loop work, so that the replies of a long
    // burst leave every `EventLoop.workBetweenTurnEnds` handlers, as queued work would.
    let loop = stream.connection.loop
    let interceptors = router.interceptors
    if measures { started(registered.index, head.method) }
    let task = Task.immediate(executorPreference: loop) {
      let status: UInt8?
      if interceptors.isEmpty {
        status = await self.execute(handler, stream, context)
      } else {
        status = await self.execute(handler, stream, context, through: interceptors)
      }
      if self.measures {
        self.finished(
          registered.index, head.method, status: self.status(status, stream, deadline: deadline),
          nanoseconds: MonotonicClock.now() &- now)
      }
      if self.drainSignal.isFired && !stream.wasCut {
        self.drainedCalls.add(1, ordering: .relaxed)
      }
      stream.release()
    }
    stream.attach(task)
    if loop.inEventLoop { loop.noteWorkDone() }
  }

  /// The call's status as the dispatcher sent it; nil if the stream had already ended (see
  /// ``status(_:_:deadline:)``).
  private func execute(_ handler: Router.Handler, _ stream: StreamHandle, _ context: ServerContext) async -> UInt8? {
    do {
      switch handler {
      case .unary(let body):
        let request = try await onlyRequest(stream)
        let response = try await body(request, context)
        stream.respond(
          headers: context.takeResponseHeaders(), message: response,
          trailers: Trailers(status: 0, metadata: context.trailingMetadata))
      case .serverStreaming(let body):
        let request = try await onlyRequest(stream)
        if context.isResumable { startResumable(stream, context, requestsRead: 1) }
        try await body(request, ResponseWriter(stream: stream, context: context), context)
        finishOK(stream, context)
      case .clientStreaming(let body):
        let response = try await body(RequestStream(stream: stream), context)
        stream.respond(
          headers: context.takeResponseHeaders(), message: response,
          trailers: Trailers(status: 0, metadata: context.trailingMetadata))
      case .bidirectional(let body):
        if context.isResumable { startResumable(stream, context, requestsRead: 0) }
        try await body(
          RequestStream(stream: stream, transform: nil, counter: context.requestsRead),
          ResponseWriter(stream: stream, context: context), context)
        finishOK(stream, context)
      }
      return 0
    } catch {
      let trailers = trailers(for: error, context)
      return stream.finish(trailers) ? trailers.status : nil
    }
  }

  /// What a call ended with, for metrics: the status sent, or for a stream that had already
  /// ended, why: its deadline passed (the connection sent `deadlineExceeded`), a stop cut it
  /// (`unavailable`), or the client reset it (`cancelled`).
  private func status(_ sent: UInt8?, _ stream: StreamHandle, deadline: UInt64) -> UInt8 {
    if let sent { return sent }
    if deadline != 0 && MonotonicClock.now() >= deadline {
      metrics?.streamsCutAtCallDeadline.add()
      observer?.observe(.streamsCut(count: 1, reason: "call_deadline"))
      return RPCError.Code.deadlineExceeded.rawValue
    }
    if stream.wasCut { return RPCError.Code.unavailable.rawValue }
    return RPCError.Code.cancelled.rawValue
  }

  /// A call with interceptors: the chain runs around the handler, and the status (with a unary
  /// reply) is sent once the whole chain has returned, so that every interceptor sees, and may
  /// still change, the outcome.
  private func execute(
    _ handler: Router.Handler, _ stream: StreamHandle, _ context: ServerContext,
    through interceptors: [any ServerInterceptor]
  ) async -> UInt8? {
    let call = ServerCall(
      method: context.method, shape: handler.shape, metadata: context.requestMetadata, context: context)
    var reply: [UInt8]?
    var handlerContext = context
    do {
      try await interceptServerCall(interceptors, call) { call in
        let context = context.with(requestMetadata: call.metadata)
        handlerContext = context
        let inbound = call.inbound
        let outbound = call.outbound
        switch handler {
        case .unary(let body):
          var request = try await onlyRequest(stream)
          if let inbound { request = try await inbound(request) }
          var response = try await body(request, context)
          if let outbound { response = try await outbound(response) }
          reply = response
        case .serverStreaming(let body):
          var request = try await onlyRequest(stream)
          if let inbound { request = try await inbound(request) }
          if context.isResumable { self.startResumable(stream, context, requestsRead: 1) }
          try await body(request, ResponseWriter(stream: stream, context: context, transform: outbound), context)
        case .clientStreaming(let body):
          var response = try await body(RequestStream(stream: stream, transform: inbound), context)
          if let outbound { response = try await outbound(response) }
          reply = response
        case .bidirectional(let body):
          if context.isResumable { self.startResumable(stream, context, requestsRead: 0) }
          try await body(
            RequestStream(stream: stream, transform: inbound, counter: context.requestsRead),
            ResponseWriter(stream: stream, context: context, transform: outbound), context)
        }
      }
      if handler.shape == .unary || handler.shape == .clientStreaming, reply == nil {
        throw RPCError(code: .internal, message: "an interceptor ended the call without running its handler")
      }
      if let reply {
        stream.respond(
          headers: handlerContext.takeResponseHeaders(), message: reply,
          trailers: Trailers(status: 0, metadata: handlerContext.trailingMetadata))
      } else {
        finishOK(stream, handlerContext)
      }
      return 0
    } catch {
      let trailers = trailers(for: error, handlerContext)
      return stream.finish(trailers) ? trailers.status : nil
    }
  }

  /// A resumable stream starts with a checkpoint (PROTOCOL.md 18.2): the client learns at once
  /// that it may resume the stream, from the start or from the token it resumed with.
  private func startResumable(_ stream: StreamHandle, _ context: ServerContext, requestsRead: UInt64) {
    context.requestsRead?.value.store(requestsRead, ordering: .relaxed)
    stream.sendCheckpoint(consumed: requestsRead, token: context.resumeToken ?? [])
  }

  /// The request of a unary or server-streaming call: exactly one message, then the client's
  /// half-close. The handler runs only once both have arrived (PROTOCOL.md 7.2), so a second
  /// message is refused with INTERNAL instead of being dropped after the reply. A conforming
  /// client sends the message with END_STREAM in one frame: then the second `receive()` returns
  /// at once, from the same frame.
  private func onlyRequest(_ stream: StreamHandle) async throws -> [UInt8] {
    do {
      guard let request = try await stream.receive() else {
        throw RPCError(code: .internal, message: "the call carried no request message (PROTOCOL.md 7.2)")
      }
      guard try await stream.receive() == nil else {
        throw RPCError(code: .internal, message: "the call carried more than one request message (PROTOCOL.md 7.2)")
      }
      return request
    } catch let failure as StreamFailure {
      throw failure.rpcError
    }
  }

  private func finishOK(_ stream: StreamHandle, _ context: ServerContext) {
    if let headers = context.takeResponseHeaders() { stream.sendHeaders(headers) }
    stream.finish(Trailers(status: 0, metadata: context.trailingMetadata))
  }

  private func trailers(for error: any Error, _ context: ServerContext) -> Trailers {
    var rpcError: RPCError
    switch error {
    case let error as RPCError: rpcError = error
    case let failure as StreamFailure: rpcError = failure.rpcError
    case is CancellationError: rpcError = RPCError(code: .cancelled, message: "the handler was cancelled")
    default:
      rpcError = RPCError(
        code: .internal,
        message: exposeErrorDetails
          ? "handler failed: \(error)"
          : "the handler failed (details are in the server's log when exposeErrorDetails is off)")
      logger.log(.debug, "handler failed", ("method", context.method), ("error", "\(error)"))
    }
    if rpcError.metadata.isEmpty { rpcError.metadata = context.trailingMetadata }
    return Trailers(rpcError)
  }

}
