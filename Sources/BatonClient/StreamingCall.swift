import BatonCore
import BatonPosix
import BatonTransport
import Synchronization

/// A streaming call that survives its server going away before processing it.
///
/// Until the server's first reply proves the call was processed, every message sent is kept
/// (up to ``Client/Configuration/maxReplayBytes``). If the attempt turns out not processed —
/// refused, or above a GOAWAY's last id — a new attempt opens on another connection and the
/// kept messages are sent again, in order, so the caller's writer and reader just carry on.
final class StreamingCall: Sendable {
  private let client: Client
  private let method: String
  private let options: CallOptions
  let budget: RetryBudget
  private let state: Locked<State>
  /// Mirrors `State.committed` so that the per-message path skips the lock once replay is moot.
  private let committedFlag = Atomic<Bool>(false)

  private struct State {
    var attempt: Attempt?
    var number = 0
    var replay: [[UInt8]] = []
    var replayBytes = 0
    var replayLost = false
    var ended = false
    var committed = false
    var recovering = false
    var waiters: [CheckedContinuation<Void, Never>] = []
    var finished = false
  }

  struct Attempt: Sendable {
    let lease: EndpointPool.Lease
    let stream: StreamHandle
  }

  init(client: Client, method: String, options: CallOptions) {
    self.client = client
    self.method = method
    self.options = options
    self.budget = RetryBudget(
      options: options, retriesWithoutDeadline: client.configuration.maxRetriesWithoutDeadline,
      endpoints: client.pool.endpointCount)
    self.state = Locked(State())
  }

  /// Opens the first attempt; `request` is the single request of a server-streaming call.
  func start(request: [UInt8]?) async throws {
    if !options.metadata.isEmpty { try MetadataRules.check(options.metadata) }
    if let request {
      state.withLock { s in
        s.replay.append(request)
        s.replayBytes = request.count
        s.ended = true
      }
    }
    try await openAttempt(avoiding: nil)
  }

  /// The current attempt's stream and number (the lease stays in the state: copying it out
  /// would cost a retain and release per message).
  private func current() throws -> (StreamHandle, Int) {
    try state.withLock { s in
      guard let stream = s.attempt?.stream, !s.finished else {
        throw RPCError(code: .cancelled, message: "the call has ended")
      }
      return (stream, s.number)
    }
  }

  /// Whether the connection carrying this call received GOAWAY: the server is draining, and a
  /// long-lived stream may want to finish and start again (it will land elsewhere).
  var isConnectionDraining: Bool {
    guard let attempt = state.withLock({ $0.attempt }) else { return false }
    return attempt.lease.connection.goAwayReceived != nil
  }

  /// How far ``queue(_:)`` got with a message.
  enum Queued {
    /// In the connection's outbound bytes: done.
    case sent
    /// Queued, but the stream is out of credit: wait before the next one.
    case awaitCredit(StreamHandle, attempt: Int)
    /// The attempt failed; recovery decides (a new attempt replays the message).
    case failed(StreamFailure, attempt: Int)
  }

  /// The synchronous half of a write: the common case (credit available) finishes here, with
  /// no suspension and no async frame per message.
  func queue(_ message: [UInt8]) throws -> Queued {
    if !committedFlag.load(ordering: .acquiring) {
      keepForReplay(message)
    }
    // Queued under the call's lock, with the attempt's stream borrowed there: copying it out
    // would retain and release the connection, an object the event loop's thread also counts,
    // once per message. The connection never calls back into the call while it holds its own
    // lock, so taking it inside this one cannot deadlock.
    return try state.withLock { s throws -> Queued in
      let blocked: Bool?
      do {
        blocked = s.finished ? nil : try s.attempt?.stream.enqueue(message)
      } catch let failure as StreamFailure {
        return .failed(failure, attempt: s.number)
      }
      switch blocked {
      case false?: return .sent
      case true?: if let stream = s.attempt?.stream { return .awaitCredit(stream, attempt: s.number) }
      case nil: break
      }
      throw RPCError(code: .cancelled, message: "the call has ended")
    }
  }

  /// The rest of a write that ``queue(_:)`` could not finish.
  func complete(_ queued: Queued) async throws {
    switch queued {
    case .sent:
      return
    case .awaitCredit(let stream, let number):
      do {
        try await stream.awaitCredit()
      } catch let failure as StreamFailure {
        try await recover(from: number, failure)
      }
    case .failed(let failure, let number):
      // A new attempt replays every kept message, this one included.
      try await recover(from: number, failure)
    }
  }

  private func keepForReplay(_ message: [UInt8]) {
    state.withLock { s in
      guard !s.committed, !s.replayLost else { return }
      s.replayBytes += message.count
      if s.replayBytes > client.configuration.maxReplayBytes {
        s.replayLost = true
        s.replay = []
      } else {
        s.replay.append(message)
      }
    }
  }

  func end() {
    let attempt = state.withLock { s in
      s.ended = true
      return s.attempt
    }
    attempt?.stream.end()
  }

  /// The next message, taken alone.
  func next() async throws -> [UInt8]? {
    try await nextMessage { stream in try await stream.receive() }
  }

  /// Credits bytes the reader consumed of its batch. A batch exists only once the server has
  /// answered (the call is committed, it never moves), so the current attempt lent it.
  func credit(_ bytes: Int) {
    guard let (stream, _) = try? current() else { return }
    stream.credit(bytes)
  }

  /// The next message; messages that arrived with it go into `batch` (see
  /// ``StreamHandle/receive(batch:)``), which the caller drains before calling again.
  func next(batch: inout MessageQueue) async throws -> [UInt8]? {
    if let message = batch.popFirst() { return message }
    return try await nextMessage { stream in try await stream.receive(batch: &batch) }
  }

  private func nextMessage(_ receive: (StreamHandle) async throws -> [UInt8]?) async throws -> [UInt8]? {
    while true {
      let (stream, number) = try current()
      do {
        let message = try await receive(stream)
        if !committedFlag.load(ordering: .relaxed) {
          // The server answered: it processed the call, so nothing will be replayed.
          state.withLock { s in
            s.committed = true
            s.replay = []
          }
          committedFlag.store(true, ordering: .releasing)
        }
        return message
      } catch let failure as StreamFailure {
        try await recover(from: number, failure)
      }
    }
  }

  private func recover(from number: Int, _ failure: StreamFailure) async throws {
    let role = state.withLock { s -> Bool? in
      if s.number != number { return nil }  // someone already moved on
      if s.recovering { return false }
      s.recovering = true
      return true
    }
    switch role {
    case nil:
      return
    case false?:
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let now = state.withLock { s in
          if !s.recovering { return true }
          s.waiters.append(continuation)
          return false
        }
        if now { continuation.resume() }
      }
      return
    case true?:
      break
    }
    defer {
      let waiters = state.withLock { s in
        s.recovering = false
        defer { s.waiters.removeAll() }
        return s.waiters
      }
      for waiter in waiters { waiter.resume() }
    }
    let (committed, replayLost, old) = state.withLock { ($0.committed, $0.replayLost, $0.attempt) }
    if committed { throw failure.rpcError }
    try budget.mayRetry(failure, idempotent: options.idempotent)
    if replayLost {
      throw RPCError(
        code: .unavailable,
        message: "the server did not process the call, but its messages exceeded maxReplayBytes and cannot be replayed")
    }
    client.counters.retried.add(1, ordering: .relaxed)
    if let old { retire(old) }
    try await openAttempt(avoiding: old.map { ObjectIdentifier($0.lease.connection) })
  }

  private func openAttempt(avoiding: ObjectIdentifier?) async throws {
    var avoiding = avoiding
    while true {
      let lease = try await client.pool.lease(
        deadline: budget.deadline, avoiding: avoiding, waitForReady: options.waitForReady)
      if let avoiding, ObjectIdentifier(lease.connection) == avoiding {
        do { try await budget.pauseBeforeSameConnection() } catch {
          client.pool.release(lease)
          throw error
        }
      }
      let stream: StreamHandle
      do {
        stream = try lease.connection.openStream(try budget.head(method, options))
      } catch let error as ConnectionCore.OpenError {
        client.pool.release(lease)
        try await client.handleOpenError(error, lease, budget)
        continue
      } catch {
        client.pool.release(lease)
        throw error
      }
      if let deadline = budget.deadline { stream.setDeadline(at: deadline, timeout: budget.timeout) }
      let (replay, ended) = state.withLock { s in
        s.attempt = Attempt(lease: lease, stream: stream)
        s.number += 1
        return (s.replay, s.ended)
      }
      do {
        for message in replay { try await stream.send(message) }
        if ended { stream.end() }
        return
      } catch let failure as StreamFailure {
        // Not processed again (a rolling restart): try the next endpoint.
        retire(Attempt(lease: lease, stream: stream))
        try budget.mayRetry(failure, idempotent: options.idempotent)
        client.counters.retried.add(1, ordering: .relaxed)
        avoiding = ObjectIdentifier(lease.connection)
      }
    }
  }

  private func retire(_ attempt: Attempt) {
    attempt.stream.release()
    client.pool.release(attempt.lease, streamOpened: true)
  }

  /// Ends the call: a stream still open is reset (CANCEL), the connection slot is returned.
  func finish() {
    let attempt = state.withLock { s -> Attempt? in
      guard !s.finished else { return nil }
      s.finished = true
      defer { s.attempt = nil }
      return s.attempt
    }
    if let attempt { retire(attempt) }
  }
}

/// The request side of a client- or bidirectional-streaming call.
public struct RequestWriter: Sendable {
  let call: StreamingCall
  /// The interceptors' request wrappers as one (Client+Interceptors.swift); nil, the usual case,
  /// costs one branch a message.
  @usableFromInline var transform: ClientCall.MessageTransform? = nil

  /// Sends one message, waiting while the server has not granted flow-control credit.
  ///
  /// What a caller may rely on once the server has ended the call:
  /// - with OK (a handler may end early, as a draining one should), a write does not fail: the
  ///   message is dropped, since the server no longer reads (grpc-go's `SendMsg` returns `io.EOF`
  ///   instead), and the call's outcome is what the ``ResponseStream`` reports, which ends
  ///   normally. A caller that writes and reads at once and fails on the first error therefore
  ///   reports the server's OK.
  /// - with an error status, a write throws that status: the same error the reader throws.
  ///
  /// - Throws: ``RPCError``: the server's error status; `cancelled` once the call's body has
  ///   returned; otherwise the call's failure (`unavailable`, `deadlineExceeded`, ...).
  ///
  /// Inlinable, so that a message the window has room for costs the caller no call into an
  /// async function (each one allocates a frame on the task): only waiting does.
  @inlinable
  public func write(_ message: [UInt8]) async throws {
    if let transform { return try await writeTransformed(message, transform) }
    guard let unfinished = try send(message) else { return }
    try await complete(unfinished)
  }

  /// A write that ``send(_:)`` could not finish without waiting.
  @usableFromInline
  struct UnfinishedWrite {
    let queued: StreamingCall.Queued
  }

  /// Queues the message; nil when that finished the write.
  @usableFromInline
  func send(_ message: [UInt8]) throws -> UnfinishedWrite? {
    do {
      let queued = try call.queue(message)
      if case .sent = queued { return nil }
      return UnfinishedWrite(queued: queued)
    } catch {
      throw Client.rpcError(error)
    }
  }

  @usableFromInline
  func complete(_ unfinished: UnfinishedWrite) async throws {
    do {
      try await call.complete(unfinished.queued)
    } catch {
      throw Client.rpcError(error)
    }
  }

  /// Ends the request side; the server's request stream then finishes.
  public func finish() { call.end() }

  /// True once the server carrying this call began to drain.
  public var isConnectionDraining: Bool { call.isConnectionDraining }
}

/// The response messages of a server- or bidirectional-streaming call.
///
/// Ends when the server ends the call with OK; throws ``RPCError`` with its status otherwise.
public struct ResponseStream: AsyncSequence, Sendable {
  /// One response message.
  public typealias Element = [UInt8]
  let call: StreamingCall
  /// The interceptors' response wrappers as one (Client+Interceptors.swift).
  var transform: ClientCall.MessageTransform? = nil

  /// Takes every message already received in one step; throws the call's failure, if any.
  public struct AsyncIterator: AsyncIteratorProtocol {
    let call: StreamingCall
    @usableFromInline var transform: ClientCall.MessageTransform? = nil
    /// Replies that arrived together, taken from the connection in one step.
    var batch = MessageQueue()

    /// What `for try await` calls, run where the loop runs (`nonisolated(nonsending)`, with
    /// `actor` being the loop's own isolation): behind an `isolated` parameter the loop would
    /// switch executors after every reply, which for a caller on ``Client/preferredExecutor``
    /// takes the task's status lock each time.
    @inlinable
    public nonisolated(nonsending) mutating func next(isolation actor: (any Actor)?) async throws(any Error) -> [UInt8]?
    {
      try await next()
    }

    /// Inlinable, so that a reply already in the batch costs the caller no call into an async
    /// function (each one allocates a frame on the task): only waiting for more does.
    @inlinable
    public nonisolated(nonsending) mutating func next() async throws -> [UInt8]? {
      if let transform { return try await nextTransformed(transform) }
      if let message = takeBatched() { return message }
      return try await receive()
    }

    /// The next reply of the batch in hand, giving back credit as the batch is consumed.
    @usableFromInline
    mutating func takeBatched() -> [UInt8]? {
      batch.popFirst { call.credit($0) }
    }

    /// Waits for the next reply and takes the rest of its burst as the new batch.
    @usableFromInline
    mutating func receive() async throws -> [UInt8]? {
      do {
        return try await call.next(batch: &batch)
      } catch {
        throw Client.rpcError(error)
      }
    }
  }

  /// The response messages in order.
  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(call: call, transform: transform) }

  /// True once the server carrying this call began to drain: a long-lived stream can end and
  /// start again, and the new one lands on another endpoint.
  public var isConnectionDraining: Bool { call.isConnectionDraining }
}

extension Client {
  /// One request, a stream of replies. `body` reads them; the call ends when `body` returns.
  public func serverStreaming<Result: Sendable>(
    _ method: String, _ request: [UInt8], options: CallOptions = .defaults,
    _ body: (ResponseStream) async throws -> Result
  ) async throws -> Result {
    try await streaming(method, .serverStreaming, options, request: request) { call, transforms in
      try await body(ResponseStream(call: call, transform: transforms.inbound))
    }
  }

  /// A stream of requests written by `body`, one reply.
  public func clientStreaming(
    _ method: String, options: CallOptions = .defaults, _ body: (RequestWriter) async throws -> Void
  ) async throws -> [UInt8] {
    try await streaming(method, .clientStreaming, options, request: nil) { call, transforms in
      try await body(RequestWriter(call: call, transform: transforms.outbound))
      call.end()
      guard var reply = try await call.next() else {
        throw RPCError(code: .internal, message: "the server ended a client-streaming call without a reply")
      }
      // The status: OK, or the error it throws. A second message breaks the call's shape
      // (PROTOCOL.md 7.2): INTERNAL; the stream, still open, is reset with CANCEL as the call ends.
      if try await call.next() != nil {
        throw RPCError(
          code: .internal, message: "the server sent more than one response message for a client-streaming call")
      }
      if let inbound = transforms.inbound { reply = try await inbound(reply) }
      return reply
    }
  }

  /// Requests and replies at once: `body` writes with the writer and reads the stream.
  public func bidirectional<Result: Sendable>(
    _ method: String, options: CallOptions = .defaults,
    _ body: (RequestWriter, ResponseStream) async throws -> Result
  ) async throws -> Result {
    try await streaming(method, .bidirectional, options, request: nil) { call, transforms in
      try await body(
        RequestWriter(call: call, transform: transforms.outbound),
        ResponseStream(call: call, transform: transforms.inbound))
    }
  }

  private func streaming<Result: Sendable>(
    _ method: String, _ shape: CallShape, _ options: CallOptions, request: [UInt8]?,
    _ body: (StreamingCall, MessageTransforms) async throws -> Result
  ) async throws -> Result {
    do {
      let result =
        hasInterceptors(options)
        ? try await interceptedStreaming(method, shape, options, request: request) { options, request, transforms in
          try await streaming(method, options, request: request, transforms, body)
        } : try await streaming(method, options, request: request, .none, body)
      counters.succeeded.add(1, ordering: .relaxed)
      return result
    } catch {
      counters.failed.add(1, ordering: .relaxed)
      throw Self.rpcError(error)
    }
  }

  private func streaming<Result: Sendable>(
    _ method: String, _ options: CallOptions, request: [UInt8]?, _ transforms: MessageTransforms,
    _ body: (StreamingCall, MessageTransforms) async throws -> Result
  ) async throws -> Result {
    let call = StreamingCall(client: self, method: method, options: options)
    defer { call.finish() }
    do {
      try await call.start(request: request)
      return try await body(call, transforms)
    } catch {
      throw Self.rpcError(error)
    }
  }
}
