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
  let attempts: CallAttempts
  private let state: Locked<State>
  /// Mirrors `Phase.committed` so that the reader's per-message path skips the lock once the
  /// call can no longer move.
  private let committedFlag = Atomic<Bool>(false)
  struct Attempt: Sendable {
    let lease: ConnectionPool.Lease
    let stream: StreamHandle
  }

  /// Where the call is. Every message the caller writes goes through the lock that guards this,
  /// so a message is either in the attempt it was written to, or kept and replayed to the next
  /// one: never both, never out of order.
  private enum Phase {
    /// The first attempt is being opened.
    case opening
    /// An attempt runs (``State/attempt``); its messages are kept until the server answers.
    case open
    /// The attempt failed and a new one is being opened; writers wait for it.
    case recovering(waiters: [CheckedContinuation<Void, Never>])
    /// The server answered: the call stays on its attempt for good, nothing is kept.
    case committed
    /// Recovery gave up: the call's outcome, for every reader and writer.
    case failed(any Error)
    /// The caller's body returned.
    case finished
  }

  /// The request messages kept for a replay, and what the caller did to its side of the call.
  private struct State {
    var phase = Phase.opening
    /// The running attempt: set exactly while the phase is `open` or `committed`. Stored beside
    /// the phase, not in it, so that the per-message path borrows its stream in place (binding
    /// an enum's payload copies it: a retain and release of the connection per message).
    var attempt: Attempt?
    /// Bumped at each new attempt: a failure reported for an older one is moot.
    var number = 0
    var replay: [[UInt8]] = []
    var replayBytes = 0
    /// More was written than ``Client/Configuration/maxReplayBytes``: the call cannot move.
    var replayLost = false
    /// The caller ended the request side (or the shape has a single request).
    var ended = false
    /// The server answered at least once: the call can no longer be replayed as unprocessed,
    /// only resumed (1.1) from a checkpoint.
    var everCommitted = false

    // Resumable streams (protocol 1.1, PROTOCOL.md 18).
    /// A server-streaming call's one request: sent again on every resumption.
    var request: [UInt8]?
    /// (bidirectional) The stream is resumable, so the request messages after the checkpoint's
    /// `consumed` are kept: `sentLog[0]` is the call's message number `sentLogBase`.
    var keepsSentLog = false
    var sentLog: [[UInt8]] = []
    var sentLogBase: UInt64 = 0
    var sentLogBytes = 0
    /// The kept messages outgrew maxReplayBytes: the call can no longer be resumed.
    var sentLogLost = false
    /// After a resumption: the checkpoint the current attempt continues from (its stream's
    /// message 0 follows it), until the new stream sends one of its own.
    var carried: StreamHandle.Checkpoint?
    /// After a resumption: how many of the new stream's first messages the caller already has
    /// (0 again once the reader is past them).
    var skip = 0
    /// Messages the retired stream had received and the reader had not taken when the call
    /// moved: the reader gets them before the new stream's. At most a stream window's worth.
    var unread = MessageQueue()
  }

  init(client: Client, method: String, options: CallOptions, startedAt: UInt64? = nil) {
    self.client = client
    self.attempts = CallAttempts(
      method: method, options: options, pool: client.pool,
      retriesWithoutDeadline: client.configuration.maxRetriesWithoutDeadline, startedAt: startedAt)
    self.state = Locked(State())
  }

  /// Opens the first attempt; `request` is the single request of a server-streaming call.
  func start(request: [UInt8]?, metadata: Metadata) async throws {
    if !metadata.isEmpty { try MetadataRules.check(metadata) }
    if let request {
      state.withLock { s in
        s.replay.append(request)
        s.replayBytes = request.count
        s.ended = true
        s.request = request
      }
    }
    try await openAttempt(avoiding: nil)
  }

  /// Whether the connection carrying this call received GOAWAY: the server is draining, and a
  /// long-lived stream may want to finish and start again (it will land elsewhere).
  var isConnectionDraining: Bool {
    guard let attempt = state.withLock({ $0.attempt }) else { return false }
    return attempt.lease.connection.goAwayReceived != nil
  }

  /// How far ``queue(_:)`` got with a message.
  enum Queued {
    /// In the connection's outbound bytes (or kept for the attempt being opened): done.
    case sent
    /// Queued, but the stream is out of credit: wait before the next one.
    case awaitCredit(StreamHandle, attempt: Int)
    /// The attempt failed; recovery decides (a new attempt replays the message).
    case failed(StreamFailure, attempt: Int)
    /// Kept for the attempt being opened: wait for it, so that writes do not outrun recovery.
    case awaitRecovery
  }

  /// The synchronous half of a write: the common case (credit available) finishes here, with
  /// no suspension and no async frame per message.
  ///
  /// Kept and queued under the call's lock, with the attempt's stream borrowed there: copying it
  /// out would retain and release the connection, an object the event loop's thread also
  /// counts, once per message. The connection never calls back into the call while it holds its
  /// own lock, so taking it inside this one cannot deadlock.
  func queue(_ message: [UInt8]) throws -> Queued {
    let maxReplayBytes = client.configuration.maxReplayBytes
    return try state.withLock { s throws -> Queued in
      if s.keepsSentLog {
        Self.keepForResumption(message, &s, limit: maxReplayBytes)
      } else if !s.everCommitted && !s.replayLost {
        s.replayBytes += message.count
        if s.replayBytes > maxReplayBytes {
          s.replayLost = true
          s.replay = []
        } else {
          s.replay.append(message)
        }
      }
      switch s.phase {
      case .open, .committed:
        do {
          guard try s.attempt?.stream.enqueue(message) == true else { return .sent }
          guard let stream = s.attempt?.stream else { return .sent }
          return .awaitCredit(stream, attempt: s.number)
        } catch let failure as StreamFailure {
          return .failed(failure, attempt: s.number)
        }
      case .opening, .recovering:
        return .awaitRecovery
      case .failed(let error):
        throw error
      case .finished:
        throw RPCError(code: .cancelled, message: "the call has ended")
      }
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
    case .awaitRecovery:
      await waitForRecovery()
    }
  }

  /// Keeps a request message of a resumable stream; when the kept ones outgrow `limit`, first
  /// forgets those the server's latest checkpoint says it read.
  private static func keepForResumption(_ message: [UInt8], _ s: inout State, limit: Int) {
    guard !s.sentLogLost else { return }
    s.sentLog.append(message)
    s.sentLogBytes += message.count
    guard s.sentLogBytes > limit else { return }
    if let consumed = (s.attempt?.stream.checkpoint ?? s.carried)?.consumed, consumed > s.sentLogBase {
      let drop = Int(min(consumed - s.sentLogBase, UInt64(s.sentLog.count)))
      s.sentLogBytes -= s.sentLog.prefix(drop).reduce(0) { $0 + $1.count }
      s.sentLog.removeFirst(drop)
      s.sentLogBase += UInt64(drop)
    }
    if s.sentLogBytes > limit {
      s.sentLogLost = true
      s.sentLog = []
      s.sentLogBytes = 0
    }
  }

  func end() {
    state.withLock { s in
      s.ended = true
      s.attempt?.stream.end()
    }
  }

  /// The next message, taken alone.
  func next() async throws -> [UInt8]? {
    try await nextMessage { stream in try await stream.receive() }
  }

  /// Credits bytes the reader consumed of its batch. A batch exists only once the server has
  /// answered (the call is committed, it never moves), so the current attempt lent it.
  func credit(_ bytes: Int) {
    state.withLock { $0.attempt }?.stream.credit(bytes)
  }

  /// The next message; messages that arrived with it go into `batch` (see
  /// ``StreamHandle/receive(batch:)``), which the caller drains before calling again.
  func next(batch: inout MessageQueue) async throws -> [UInt8]? {
    if let message = batch.popFirst() { return message }
    return try await nextMessage { stream in try await stream.receive(batch: &batch) }
  }

  private func nextMessage(_ receive: (StreamHandle) async throws -> [UInt8]?) async throws -> [UInt8]? {
    while true {
      let (unread, attempt, number, skip) = try state.withLock { s throws -> ([UInt8]?, Attempt?, Int, Int) in
        switch s.phase {
        case .finished: throw RPCError(code: .cancelled, message: "the call has ended")
        case .failed(let error): throw error
        default: return (s.unread.popFirst(), s.attempt, s.number, s.skip)
        }
      }
      if let unread { return unread }
      guard let attempt else {
        await waitForRecovery()
        continue
      }
      do {
        if skip > 0 {
          if attempt.stream.taken < skip {
            // A resumed stream repeats what followed its checkpoint: drop what the caller has.
            guard try await attempt.stream.receive() != nil else { return nil }
            continue
          }
          // Past the repeats: later messages need no count (a recovery counts on the connection).
          state.withLock { s in if s.number == number { s.skip = 0 } }
        }
        // A stream retired under the reader (the writer moved the call) fails with
        // `StreamFailure.released`: the recovery below finds the call moved on and waits for it.
        let message = try await receive(attempt.stream)
        if !committedFlag.load(ordering: .relaxed) { commit(number) }
        return message
      } catch let failure as StreamFailure {
        try await recover(from: number, failure)
      }
    }
  }

  /// The server answered: it processed the call, so nothing will be replayed.
  private func commit(_ number: Int) {
    state.withLock { s in
      guard s.number == number, case .open = s.phase else { return }
      s.phase = .committed
      s.everCommitted = true
      // A stream that checkpoints (the server sends one as it starts a resumable method) may be
      // resumed: what a later resumption must replay is kept instead of dropped.
      if s.request == nil, !s.replayLost, s.attempt?.stream.checkpoint != nil {
        s.keepsSentLog = true
        s.sentLog = s.replay
        s.sentLogBytes = s.replayBytes
      }
      s.replay = []
    }
    committedFlag.store(true, ordering: .releasing)
  }

  /// Returns once no recovery runs (at once if none does).
  private func waitForRecovery() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let now = state.withLock { s in
        switch s.phase {
        case .recovering(var waiters):
          waiters.append(continuation)
          s.phase = .recovering(waiters: waiters)
          return false
        case .opening:
          // The first attempt is opened by `start`, before the caller's body runs: unreachable
          // in practice, and nothing to wait for that would ever resume this.
          return true
        case .open, .committed, .failed, .finished:
          return true
        }
      }
      if now { continuation.resume() }
    }
  }

  /// Moves the call to a new attempt after attempt `number` failed, if the rules allow it;
  /// otherwise throws the call's error. Concurrent failures of the same attempt recover once:
  /// the others wait for that recovery.
  private func recover(from number: Int, _ failure: StreamFailure) async throws {
    enum Role { case moot, recover(Attempt?), resume(Attempt?, StreamHandle.Checkpoint, skip: Int), fail(any Error) }
    let role = state.withLock { s -> Role in
      guard s.number == number else { return .moot }  // someone already moved on
      switch s.phase {
      case .recovering, .opening, .failed, .finished:
        return .moot
      case .committed, .open:
        let old = s.attempt
        if let checkpoint = Self.resumableFrom(failure, old, s) {
          // What the old stream received and the reader has not taken yet stays the caller's
          // (the checkpoint may cover it, and the new stream would not repeat it), less what a
          // reader still dropping a resumed stream's repeats would have dropped.
          // Counted by the connection as it takes them: exact even while the reader runs.
          var (unread, arrived) = old?.stream.takeUnread() ?? (MessageQueue(), 0)
          for _ in 0..<max(0, s.skip - (arrived - unread.count)) { _ = unread.popFirst() }
          while let message = unread.popFirst() { s.unread.append(message) }
          let position = max(arrived, s.skip)
          s.attempt = nil
          s.phase = .recovering(waiters: [])
          return .resume(old, checkpoint, skip: max(0, position - checkpoint.index))
        }
        guard case .open = s.phase else { return .fail(failure.rpcError) }
        s.attempt = nil
        s.phase = .recovering(waiters: [])
        return .recover(old)
      }
    }
    let old: Attempt?
    switch role {
    case .moot:
      return await waitForRecovery()
    case .fail(let error):
      throw error
    case .resume(let attempt, let checkpoint, let skip):
      if let attempt { retire(attempt) }
      return try await resume(from: checkpoint, skip: skip, failure, avoiding: attempt)
    case .recover(let attempt):
      old = attempt
    }
    // The failed attempt left the phase: this recovery owns it, and gives its slot back now.
    if let old { retire(old) }
    do {
      let replayLost = state.withLock { $0.replayLost }
      let reason = try attempts.mayRetry(failure)
      if replayLost {
        throw RPCError(
          code: .unavailable,
          message:
            "the server did not process the call, but its messages exceeded maxReplayBytes and cannot be replayed")
      }
      client.noteRetry(reason, method: attempts.method)
      try await openAttempt(avoiding: old.map { ObjectIdentifier($0.lease.connection) })
    } catch {
      giveUp(error)
      throw error
    }
  }

  /// The checkpoint to resume from after `failure`, if the call can be resumed (PROTOCOL.md 18.4):
  /// the server ended the stream resumably, or the connection was lost (or a resumed stream was
  /// refused) after a checkpoint, and what must be replayed is still kept.
  private static func resumableFrom(_ failure: StreamFailure, _ attempt: Attempt?, _ s: State)
    -> StreamHandle.Checkpoint?
  {
    switch failure {
    case .resumable, .connectionLost, .notProcessed: break
    case .reset, .local: return nil
    }
    guard let checkpoint = attempt?.stream.checkpoint ?? s.carried else { return nil }
    if s.request == nil {
      // Bidirectional: the messages after `consumed` must still be at hand.
      if s.keepsSentLog {
        guard !s.sentLogLost, checkpoint.consumed >= s.sentLogBase else { return nil }
      } else {
        guard !s.everCommitted, !s.replayLost else { return nil }
      }
    }
    // A stream refused before it opened was not processed at all: that is a plain retry.
    if case .notProcessed = failure, !s.everCommitted { return nil }
    return checkpoint
  }

  /// Continues the call on a new stream from `checkpoint`: opens it with the token, replays what
  /// the server had not read, and has the reader drop the first `skip` messages, which the
  /// caller already has.
  private func resume(
    from checkpoint: StreamHandle.Checkpoint, skip: Int, _ failure: StreamFailure, avoiding old: Attempt?
  ) async throws {
    var avoiding = old.map { ObjectIdentifier($0.lease.connection) }
    let token = [ResumableStreams.resumeKey: ResumableStreams.encode(checkpoint.token)] as Metadata
    var failure = failure
    do {
      while true {
        try attempts.mayResume(failure, progressed: skip > 0 || checkpoint.index > 0)
        let (lease, stream) = try await attempts.open(avoiding: avoiding, extraMetadata: token)
        let attempt = Attempt(lease: lease, stream: stream)
        let outcome = install(attempt) { s in
          if let request = s.request { return [request] }
          if s.keepsSentLog { return s.sentLog.dropFirst(Int(checkpoint.consumed - s.sentLogBase)) }
          return s.replay.dropFirst(Int(min(checkpoint.consumed, UInt64(s.replay.count))))
        } then: { s, replay in
          // The new stream continues a call the caller has seen answered: committed at once.
          s.phase = .committed
          s.everCommitted = true
          if s.request == nil && !s.keepsSentLog {
            s.keepsSentLog = true
            s.sentLog = Array(replay)
            s.sentLogBase = checkpoint.consumed
            s.sentLogBytes = replay.reduce(0) { $0 + $1.count }
            s.replay = []
          }
          s.carried = StreamHandle.Checkpoint(index: 0, consumed: checkpoint.consumed, token: checkpoint.token)
          s.skip = skip
        }
        switch outcome {
        case nil:
          retire(attempt)
          throw RPCError(code: .cancelled, message: "the call has ended")
        case .success(let waiters)?:
          committedFlag.store(true, ordering: .releasing)
          client.noteResumption(method: attempts.method)
          for waiter in waiters { waiter.resume() }
          return
        case .failure(let next)?:
          retire(attempt)
          failure = next
          avoiding = ObjectIdentifier(lease.connection)
        }
      }
    } catch {
      giveUp(error)
      throw error
    }
  }

  /// Makes `attempt` the call's, under the call's lock: first the kept messages `replay` picks go
  /// into its stream, before any later write can (so the server reads them in the order the
  /// caller wrote them; the stream takes them all, they fit in maxReplayBytes, and credit only
  /// paces later writes), then the half-close if the caller gave it, then `update`. Returns the
  /// writers that waited for the recovery; nil if the call ended meanwhile; the stream's failure
  /// if it failed already (a rolling restart refusing it too).
  private func install(
    _ attempt: Attempt, replay pick: (State) -> ArraySlice<[UInt8]>,
    then update: (inout State, ArraySlice<[UInt8]>) -> Void
  ) -> Result<[CheckedContinuation<Void, Never>], StreamFailure>? {
    state.withLock { s in
      switch s.phase {
      case .finished, .failed: return nil
      default: break
      }
      let replay = pick(s)
      do {
        for message in replay { _ = try attempt.stream.enqueue(message) }
      } catch let failure as StreamFailure {
        return .failure(failure)
      } catch let status as RPCError {
        // The server answered before the request was queued (an unknown method, a rejection on
        // metadata alone): its status is the call's outcome.
        return .failure(.local(status))
      } catch {
        return .failure(.local(RPCError(code: .internal, message: "\(error)", cause: error)))
      }
      if s.ended { attempt.stream.end() }
      let waiters: [CheckedContinuation<Void, Never>]
      if case .recovering(let parked) = s.phase { waiters = parked } else { waiters = [] }
      update(&s, replay)
      s.attempt = attempt
      s.number += 1
      return .success(waiters)
    }
  }

  /// Recovery failed: every reader and writer gets `error`.
  private func giveUp(_ error: any Error) {
    let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      guard case .recovering(let waiters) = s.phase else { return [] }
      s.phase = .failed(error)
      return waiters
    }
    for waiter in waiters { waiter.resume() }
  }

  /// Opens attempts until one takes the kept messages; the call is then `open` on it.
  private func openAttempt(avoiding: ObjectIdentifier?) async throws {
    var avoiding = avoiding
    while true {
      let (lease, stream) = try await attempts.open(avoiding: avoiding)
      let attempt = Attempt(lease: lease, stream: stream)
      let outcome = install(attempt) { s in
        s.replay[...]
      } then: { s, _ in
        s.phase = .open
      }
      switch outcome {
      case nil:
        retire(attempt)
        throw RPCError(code: .cancelled, message: "the call has ended")
      case .success(let waiters)?:
        for waiter in waiters { waiter.resume() }
        return
      case .failure(let failure)?:
        // Not processed again (a rolling restart): try the next endpoint.
        retire(attempt)
        client.noteRetry(try attempts.mayRetry(failure), method: attempts.method)
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
    let (attempt, waiters) = state.withLock { s -> (Attempt?, [CheckedContinuation<Void, Never>]) in
      let attempt = s.attempt
      s.attempt = nil
      var waiters: [CheckedContinuation<Void, Never>] = []
      if case .recovering(let parked) = s.phase { waiters = parked }
      s.phase = .finished
      return (attempt, waiters)
    }
    if let attempt { retire(attempt) }
    for waiter in waiters { waiter.resume() }
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
    let meter = meterStart(method)
    do {
      let result =
        hasInterceptors(options)
        ? try await interceptedStreaming(method, shape, options, request: request) { options, request, transforms in
          try await streaming(method, options, request: request, transforms, body)
        } : try await streaming(method, options, request: request, .none, startedAt: meter?.start, body)
      counters.succeeded.add(1, ordering: .relaxed)
      if let meter { meterEnd(meter, method, nil) }
      return result
    } catch {
      counters.failed.add(1, ordering: .relaxed)
      let error = Self.rpcError(error)
      if let meter { meterEnd(meter, method, error) }
      throw error
    }
  }

  private func streaming<Result: Sendable>(
    _ method: String, _ options: CallOptions, request: [UInt8]?, _ transforms: MessageTransforms,
    startedAt: UInt64? = nil, _ body: (StreamingCall, MessageTransforms) async throws -> Result
  ) async throws -> Result {
    let call = StreamingCall(client: self, method: method, options: options, startedAt: startedAt)
    defer { call.finish() }
    do {
      try await call.start(request: request, metadata: options.metadata)
      return try await body(call, transforms)
    } catch {
      throw Self.rpcError(error)
    }
  }
}
