package import BatonCore
package import BatonPosix

/// One Baton connection on a socket: a ``ConnectionCore`` (the wire) and ``StreamSlots`` (who
/// waits on which stream) under one lock, fed by the event loop that owns the socket, with the
/// application side (handlers, callers) awaiting their streams' slots.
///
/// Threading: socket I/O happens only on `loop`. Application code may call in from any thread or
/// task; every decision is made under the lock and every continuation is resumed after it is
/// released. Writes are coalesced: any number of frames produced in one loop turn leave in one
/// `sendmsg` at the end of that turn.
package final class Connection: IOHandler, @unchecked Sendable {
  /// What the owner (server or client) hears about, outside the lock.
  package enum Notice: Sendable {
    case ready(ConnectionSettings)
    /// (server) A stream opened; return the handler task so that resets and deadlines can cancel it.
    case opened(StreamHandle, RequestHead, endStream: Bool)
    case goAway(lastStreamID: UInt32, ErrorCode, debug: String)
    case pingAck(UInt64)
    /// Every stream slot has been released.
    case idle
    /// The socket is closed; no more notices follow.
    case closed(reason: String)
  }

  package let loop: EventLoop
  package let role: ConnectionCore.Role
  /// The peer's address, for logs.
  package let peer: String
  private let fd: Int32
  private let limits: TransportLimits
  /// Where this connection's bytes are counted, if anywhere (a server's `/metrics`).
  private let traffic: TrafficCounters?
  private let onNotice: @Sendable (Connection, Notice) -> Void
  private let state: Locked<State>

  // Loop-thread-only state.
  private var registration: Registration?
  private var inbound: InboundBuffer
  private var writing = OutboundBuffer()
  private var writeOffset = 0
  private var trim = WriteBufferTrim()
  private var trimTimer: TimerHandle?
  private var events: [ConnectionEvent] = []
  private var wakes: [Wake] = []
  private var interest: Interest = .read
  private var readPaused = false
  private var fdClosed = false
  private var halfClosed = false
  /// The core stopped reading (a connection error): further input is read and dropped.
  private var discarding = false
  private var lingerTimer: TimerHandle?
  private var handshakeTimer: TimerHandle?
  /// How long the frame now partly in `inbound` has been arriving, and the timer that checks it
  /// against ``TransportLimits/frameTimeout`` (at most one runs).
  private var frameClock: FrameClock
  private var frameTimer: TimerHandle?

  private struct State {
    var core: ConnectionCore
    /// Who waits on which stream: the one registry of this connection's open calls.
    var streams = StreamSlots()
    var flushScheduled = false
    var closeAfterFlush = false
    /// Why this side ended the connection (a handshake timeout, a connection error): what its
    /// close reports when the peer never answers with its own FIN.
    var abortReason: String?
    var closedReason: String?
    /// How long a close may wait for the flush and the peer's FIN, when not the default.
    var linger: UInt64?
    /// When the last frame arrived (MonotonicClock ns): what keepalive looks at.
    var lastInboundAt: UInt64 = 0
    /// Ping-flood policing: a token bucket refilled at `maxPingsPerSecond`.
    var pingTokens: Double = 0
    var pingTokensAt: UInt64 = 0
    var pingsSeen = 0
    /// Whoever awaits ``waitUntilClosed()``; resumed once the socket is closed.
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
  }

  /// (server) A call open on this connection, from its OPEN until its handler lets go of it.
  /// The connection is the one registry of its calls: drain progress, metrics and the stop report
  /// all read them here.
  package struct OpenCall: Sendable, Hashable {
    package var id: UInt32
    package var method: String
    /// When its OPEN arrived (MonotonicClock ns).
    package var openedAt: UInt64
  }

  private typealias Wake = StreamSlots.Wake

  /// Wraps an accepted or connected socket. Call ``start()`` to begin; until then nothing is read.
  package init(
    fd: Int32, loop: EventLoop, role: ConnectionCore.Role, peer: String,
    settings: ConnectionSettings, limits: TransportLimits, traffic: TrafficCounters? = nil,
    onNotice: @escaping @Sendable (Connection, Notice) -> Void
  ) {
    self.traffic = traffic
    self.fd = fd
    self.loop = loop
    self.role = role
    self.peer = peer
    self.limits = limits
    self.onNotice = onNotice
    self.inbound = InboundBuffer(capacity: 64)
    self.frameClock = FrameClock(timeout: limits.frameTimeout)
    self.state = Locked(State(core: ConnectionCore(role: role, settings: settings)))
  }

  /// Registers with the loop and sends the preface and SETTINGS.
  package func start() {
    loop.execute { [self] in
      // Already closed (a server stopping may close a connection it has just admitted before
      // this runs): the descriptor number may belong to another socket by now.
      guard !fdClosed else { return }
      do {
        registration = try loop.register(fd: fd, interest: .read, handler: self)
        flush()
      } catch {
        return closeSocket(reason: "could not register the connection: \(error)")
      }
      // A peer that never completes the handshake (preface and SETTINGS) does not hold a slot.
      // Strong on purpose: a weak reference would give this hot object a side table and slow
      // every retain and release. The timer is cancelled when the handshake completes or the
      // socket closes, so it never keeps a finished connection's memory alive.
      handshakeTimer = loop.schedule(at: MonotonicClock.now() &+ limits.handshakeTimeout) { [self] in
        loop.execute { self.handshakeTimedOut() }
      }
    }
  }

  private func handshakeTimedOut() {
    handshakeTimer = nil
    guard !fdClosed, state.withLock({ $0.core.phase == .awaitingPreface || $0.core.phase == .awaitingSettings })
    else { return }
    // A client does not wait for the FIN of a server that never spoke: the address counts as
    // unreachable once the socket closes, and calls that can only wait for it should not wait
    // out a linger too. (A server lingers: its GOAWAY should reach a slow client.)
    if role == .client { state.withLock { $0.linger = 0 } }
    abort(.protocolError, reason: "handshake timeout: no preface and SETTINGS in time")
  }

  // MARK: - Queries

  package var openStreamCount: Int { state.withLock { $0.core.openStreamCount } }
  package var activeCallCount: Int { state.withLock { $0.streams.count } }
  /// (server) The calls open now, by stream id.
  package var openCalls: [OpenCall] {
    state.withLock { s in
      s.streams.ids.compactMap { id in
        s.streams[id].map { OpenCall(id: id, method: $0.method, openedAt: $0.openedAt) }
      }
    }
  }
  /// (server) Whether ``cutAll(_:)`` ended the call before its handler did (asked before the
  /// handler releases the stream).
  func wasCut(_ id: UInt32) -> Bool { state.withLock { $0.streams[id]?.cut ?? false } }
  package var isClosed: Bool { state.withLock { $0.closedReason != nil } }
  package var canOpenStream: Bool { state.withLock { $0.core.canOpenStream } }
  package var highestPeerStreamID: UInt32 { state.withLock { $0.core.highestPeerStreamID } }
  package var goAwayReceived: UInt32? { state.withLock { $0.core.goAwayReceived } }
  package var goAwaySent: UInt32? { state.withLock { $0.core.goAwaySent } }
  package var peerSettings: ConnectionSettings { state.withLock { $0.core.peerSettings } }
  /// When the last bytes arrived (MonotonicClock ns; 0 before any).
  package var lastInboundAt: UInt64 { state.withLock { $0.lastInboundAt } }
  /// When the last call ended (MonotonicClock ns; 0 before any).
  package var lastCallEndedAt: UInt64 { state.withLock { $0.streams.lastCallEndedAt } }

  /// For diagnostics (a hung test's watchdog): the connection's phase and, per stream slot, what
  /// is parked there (receiver, writer, finisher), what is buffered, and how the stream ended.
  package var debugState: String {
    state.withLock { s in
      let streams = s.streams.ids.compactMap { id -> String? in
        guard let slot = s.streams[id] else { return nil }
        var parts: [String] = []
        if slot.receiver != nil { parts.append("receiver parked") }
        if slot.writer != nil { parts.append("writer parked") }
        if slot.finisher != nil { parts.append("finisher parked") }
        if !slot.inbox.isEmpty { parts.append("inbox not empty") }
        if slot.inputDone { parts.append("input done") }
        if let failure = slot.failure { parts.append("failed: \(failure)") }
        if let trailers = slot.trailers { parts.append("trailers: \(trailers.error.map { "\($0.code)" } ?? "ok")") }
        if slot.timer != nil { parts.append("deadline armed") }
        if s.streams.hasHandler(id) { parts.append("handler attached") }
        return "\(id): \(parts.isEmpty ? "idle" : parts.joined(separator: ", "))"
      }
      let phase = s.closedReason.map { "closed (\($0))" } ?? "\(s.core.phase)"
      return "\(role) connection with \(peer), \(phase), streams [\(streams.joined(separator: "; "))]"
    }
  }

  // MARK: - Client calls

  /// (client) Opens a stream, optionally sending its only message and END_STREAM in the same
  /// flush (a unary or server-streaming request).
  ///
  /// The stream's slot exists only once the core has opened the stream, in the same lock hold;
  /// a core whose socket is gone is closed (``transportClosed(_:_:_:)``) and refuses with
  /// ``ConnectionCore/OpenError/goingAway``. So a stream opened here is never left waiting on a
  /// dead connection: it is failed with it, or it was never opened.
  /// `singleResponse` (a unary call, which awaits its end rather than reading): a second
  /// response message fails the stream with INTERNAL and resets it with CANCEL (PROTOCOL.md 7.2).
  package func openStream(
    _ head: RequestHead, message: [UInt8]? = nil, endStream: Bool = false, singleResponse: Bool = false
  ) throws(ConnectionCore.OpenError) -> StreamHandle {
    let id = try withState { s, _ throws(ConnectionCore.OpenError) -> UInt32 in
      if let message, message.count > Int(s.core.peerSettings.maxMessageSize) {
        throw .messageTooLarge(size: message.count, limit: s.core.peerSettings.maxMessageSize)
      }
      let id = try s.core.openStream(head, endStream: endStream && message == nil)
      var ignored: [ConnectionEvent] = []
      if let message {
        // A unary request never waits for credit: what does not fit leaves as credit arrives.
        _ = s.core.sendMessage(streamID: id, message, endStream: endStream, events: &ignored)
      }
      s.streams.open(id, StreamSlot(singleResponse: singleResponse))
      return id
    }
    return StreamHandle(connection: self, id: id)
  }

  // MARK: - Stream operations (used through StreamHandle)

  func receive(_ id: UInt32) async throws -> [UInt8]? {
    // Fast path: a message is already here.
    var noBatch = MessageQueue()
    switch takeMessage(id, batch: &noBatch, batching: false) {
    case .message(let message): return message
    case .end: return nil
    case .failure(let error): throw error
    case .wait: break
    }
    if role == .server {
      // A handler's waits end when its call ends (reset, deadline, stop: all resume them here),
      // so they need no per-wait cancellation record, which costs a task-status lock per message.
      return try await withUnsafeThrowingContinuation { continuation in parkReceiver(id, continuation) }
    }
    return try await withTaskCancellationHandler {
      try await withUnsafeThrowingContinuation { continuation in parkReceiver(id, continuation) }
    } onCancel: {
      self.cancelWaits(id)
    }
  }

  /// Parks a reader until the next message or the end, unless one is already there.
  private func parkReceiver(_ id: UInt32, _ continuation: UnsafeContinuation<[UInt8]?, any Error>) {
    withState { s, wakes in
      guard let slot = s.streams[id] else { return wakes.append(.failReceive(continuation, StreamFailure.released)) }
      if let message = slot.inbox.popFirst() {
        s.core.consumed(streamID: id, bytes: message.count)
        wakes.append(.deliver(continuation, message))
      } else if let error = slot.endError {
        wakes.append(.failReceive(continuation, error))
      } else if slot.inputDone {
        wakes.append(.deliver(continuation, nil))
      } else {
        slot.receiver = continuation
      }
    }
  }

  /// The next message, and into `batch` (which must be empty: the reader consumed the last one)
  /// every other message already here: a reader then takes the lock once per burst instead of
  /// once per message. The batch's credit goes back as the reader consumes it (half of what is
  /// left at a time, see ``credit(_:_:)``) and in full when it returns for more, so what the
  /// stream holds (inbox and batch) stays within its window while the sender keeps sending.
  func receive(_ id: UInt32, batch: inout MessageQueue) async throws -> [UInt8]? {
    switch takeMessage(id, batch: &batch, batching: true) {
    case .message(let message): return message
    case .end: return nil
    case .failure(let error): throw error
    case .wait: return try await receive(id)
    }
  }

  private enum Take { case message([UInt8]), end, wait, failure(any Error) }

  /// Credits part of a batch the reader has consumed (see ``MessageQueue/owesCredit``).
  func credit(_ id: UInt32, _ bytes: Int) {
    withState { s, _ in
      guard let slot = s.streams[id] else { return }
      let bytes = min(bytes, slot.lent)
      guard bytes > 0 else { return }
      slot.lent -= bytes
      s.core.consumed(streamID: id, bytes: bytes)
    }
  }

  /// Credits the reader's last batch: it has come back for more, so it consumed it.
  private static func returnLent(_ id: UInt32, _ slot: StreamSlot, _ s: inout State) {
    guard slot.lent > 0 else { return }
    s.core.consumed(streamID: id, bytes: slot.lent)
    slot.lent = 0
  }

  /// The next message if one is here, after crediting the reader's last batch; with `batching`,
  /// every other message already here moves into `batch` (empty on entry), lent to the reader.
  private func takeMessage(_ id: UInt32, batch: inout MessageQueue, batching: Bool) -> Take {
    // The credit returned here leaves even if the reader now waits (withState flushes it).
    withState { s, _ -> Take in
      guard let slot = s.streams[id] else { return .failure(StreamFailure.released) }
      Self.returnLent(id, slot, &s)
      if let message = slot.inbox.popFirst() {
        if batching {
          slot.lent = slot.inbox.byteCount
          swap(&slot.inbox, &batch)
          batch.lend(slot.lent)
          slot.inbox.lend(0)
        }
        s.core.consumed(streamID: id, bytes: message.count)
        return .message(message)
      }
      if let error = slot.endError { return .failure(error) }
      return slot.inputDone ? .end : .wait
    }
  }

  /// Queues a message for the next flush. Returns true if part of it waits for flow-control
  /// credit: the caller must then ``awaitCredit(_:)`` before sending more on this stream.
  /// Synchronous, so that the common case costs no suspension and no async frame.
  func enqueue(_ id: UInt32, _ message: [UInt8], endStream: Bool) throws -> Bool {
    try withState { s, _ throws(any Error) -> Bool in
      var events: [ConnectionEvent] = []
      // Borrowed, not copied out: this runs for every message a caller sends.
      switch s.streams.withSlot(id, { $0.failure }) {
      case nil:
        throw StreamFailure.released
      case let failure??:
        throw failure
      case .some(nil):
        break
      }
      switch s.core.sendMessage(streamID: id, message, endStream: endStream, events: &events) {
      case .written:
        return false
      case .blocked:
        return true
      case .streamClosed:
        // (client) The server already ended the call: the message is dropped (PROTOCOL.md 7.1,
        // the client then stops sending). A write does not turn the server's OK into a
        // failure: the call's outcome is its status, which the reader gets; an error status is
        // thrown here too.
        guard let trailers = s.streams[id]?.trailers else {
          throw RPCError(code: .cancelled, message: "the peer already ended the call")
        }
        if let error = trailers.error { throw error }
        return false
      case .tooLarge(let limit):
        throw RPCError(
          code: .resourceExhausted, message: "message of \(message.count) bytes exceeds the peer's limit of \(limit)")
      }
    }
  }

  /// Waits until the message that ``enqueue(_:_:endStream:)`` reported blocked is all written.
  func awaitCredit(_ id: UInt32) async throws {
    try await withTaskCancellationHandler {
      try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
        withState { s, wakes in
          s.streams.parkWriter(id, continuation, streamOpen: s.core.isOpen(id), &wakes)
        }
      }
    } onCancel: {
      self.cancelWaits(id)
    }
  }

  /// (client) Ends the request side of the stream.
  func end(_ id: UInt32) {
    withState { s, _ in s.core.sendEnd(streamID: id) }
  }

  /// (server) Sends response metadata.
  func sendHeaders(_ id: UInt32, _ metadata: Metadata) {
    withState { s, _ in s.core.sendHeaders(streamID: id, metadata) }
  }

  /// (server) Answers a unary call in one step: headers, the message, the status.
  func respond(_ id: UInt32, headers: Metadata?, message: [UInt8]?, trailers: Trailers) {
    withState { s, _ in
      guard s.core.isOpen(id) else { return }
      if let headers, !headers.isEmpty { s.core.sendHeaders(streamID: id, headers) }
      var trailers = trailers
      if let message {
        var events: [ConnectionEvent] = []
        if case .tooLarge(let limit) = s.core.sendMessage(streamID: id, message, events: &events) {
          trailers = Trailers(
            RPCError(
              code: .resourceExhausted,
              message: "response of \(message.count) bytes exceeds the client's limit of \(limit)"))
        }
      }
      s.core.sendTrailers(streamID: id, trailers)
    }
  }

  /// (server) Ends the stream with a status. Returns false if it had already ended.
  @discardableResult
  func finish(_ id: UInt32, _ trailers: Trailers) -> Bool {
    withState { s, _ in s.core.sendTrailers(streamID: id, trailers) }
  }

  /// Resets the stream (client: CANCEL; server: an error) and fails its waiters with `failure`.
  func reset(_ id: UInt32, _ code: ErrorCode, failure: StreamFailure) {
    withState { s, wakes in
      s.core.resetStream(streamID: id, code)
      s.streams.fail(id, failure, &wakes)
    }
  }

  /// (client) Waits until the server has ended the stream (TRAILERS) or it failed.
  func awaitEnd(_ id: UInt32) async throws {
    try await withTaskCancellationHandler {
      try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
        withState { s, wakes in s.streams.parkFinisher(id, continuation, &wakes) }
      }
    } onCancel: {
      self.cancelWaits(id)
    }
  }

  /// (client) The server's latest checkpoint of the stream (1.1), if any.
  func checkpoint(_ id: UInt32) -> StreamHandle.Checkpoint? {
    state.withLock { $0.streams[id]?.checkpoint }
  }

  /// (client) Takes the messages that arrived on the stream and that no reader has taken yet,
  /// crediting them as consumed, with how many arrived in all (the count a checkpoint's index
  /// uses): a call moving to another stream hands them to its reader before the new stream's
  /// (the checkpoint it resumes from may already cover them).
  func takeUnread(_ id: UInt32) -> (unread: MessageQueue, arrived: Int) {
    withState { s, _ in
      guard let slot = s.streams[id] else { return (MessageQueue(), 0) }
      var unread = MessageQueue()
      while let message = slot.inbox.popFirst() {
        s.core.consumed(streamID: id, bytes: message.count)
        unread.append(message)
      }
      return (unread, slot.received)
    }
  }

  /// (client) How many of the stream's messages a reader has taken (got, or batched): counted
  /// here, under the lock that hands them out, so that it is exact while the reader runs.
  func taken(_ id: UInt32) -> Int {
    state.withLock { s in s.streams[id].map { $0.received - $0.inbox.count } ?? 0 }
  }

  /// (server) Sends a checkpoint of the stream; false when resumption is off or the stream ended.
  func sendCheckpoint(_ id: UInt32, consumed: UInt64, token: [UInt8]) -> Bool {
    withState { s, _ in s.core.sendCheckpoint(streamID: id, consumed: consumed, token: token) }
  }

  /// Whether both sides announced protocol 1.1's resumable streams.
  package var resumptionOn: Bool { state.withLock { $0.core.resumptionOn } }

  /// (client) Everything a unary call's caller needs once the stream has ended, and the stream
  /// released, in one lock hold: the headers, the trailers or the failure, and the first message.
  func takeResponse(_ id: UInt32) -> StreamHandle.Response {
    let now = MonotonicClock.now()
    let (response, slot) = withState { s, wakes -> (StreamHandle.Response, StreamSlot?) in
      guard let slot = s.streams[id] else { return (StreamHandle.Response(), nil) }
      let message = slot.inbox.popFirst()
      if let message { s.core.consumed(streamID: id, bytes: message.count) }
      let response = StreamHandle.Response(
        headers: slot.headers, trailers: slot.trailers, failure: slot.failure, message: message)
      _ = Self.release(id, &s, now: now, &wakes)
      return (response, slot)
    }
    _ = slot  // the slot is freed here, after the lock
    return response
  }

  /// Ends the caller's or handler's interest in a stream: a stream still open is reset (CANCEL),
  /// unread messages give back their credit.
  func release(_ id: UInt32) {
    let now = MonotonicClock.now()
    let slot = withState { s, wakes in Self.release(id, &s, now: now, &wakes) }
    _ = slot  // the slot is freed here, after the lock
  }

  /// Forgets a stream's slot (``StreamSlots/release(_:now:_:)``) and settles it on the wire: a
  /// stream still open is reset, unread messages give back their credit. Returns the slot so that
  /// it is freed after the lock.
  private static func release(_ id: UInt32, _ s: inout State, now: UInt64, _ wakes: inout [Wake]) -> StreamSlot? {
    guard let released = s.streams.release(id, now: now, &wakes) else { return nil }
    // A reply still waiting for flow-control credit, with its status queued behind it, is
    // not abandoned: it finishes on its own as credit arrives.
    if s.core.isOpen(id) && !s.core.isEnding(id) {
      s.core.resetStream(streamID: id, s.core.role == .client ? .cancel : .internalError)
    }
    if released.unreadBytes > 0 { s.core.consumed(streamID: id, bytes: released.unreadBytes) }
    return released.slot
  }

  /// (server) Remembers the handler task so that a reset or deadline can cancel it.
  func attach(_ id: UInt32, task: Task<Void, Never>) {
    let attached = state.withLock { $0.streams.attach(id, task: task) }
    if !attached { task.cancel() }
  }

  /// Arms the stream's deadline. At `deadline` (MonotonicClock ns) the stream ends with
  /// DEADLINE_EXCEEDED: a client resets it, a server sends that status and cancels the handler.
  func setDeadline(_ id: UInt32, at deadline: UInt64, timeout: UInt64) {
    let timer = loop.schedule(at: deadline) { [self] in
      let error = RPCError(
        code: .deadlineExceeded, message: "the deadline of \(Self.describe(nanoseconds: timeout)) passed")
      withState { s, wakes in
        guard s.streams[id] != nil else { return }
        if role == .client {
          s.core.resetStream(streamID: id, .cancel)
        } else {
          s.core.cutStream(streamID: id, Trailers(error), because: .callDeadline)
        }
        s.streams.fail(id, .local(error), &wakes)
      }
    }
    let armed = state.withLock { $0.streams.setTimer(id, timer, deadline: deadline) }
    if !armed { loop.cancel(timer) }
  }

  package static func describe(nanoseconds: UInt64) -> String {
    nanoseconds >= 1_000_000_000 && nanoseconds % 1_000_000 == 0
      ? "\(Double(nanoseconds) / 1e9) s" : "\(nanoseconds / 1_000_000) ms"
  }

  /// Task cancellation of a waiter: a client call is cancelled on the wire; a server handler's
  /// waits just end (the server decides the status).
  private func cancelWaits(_ id: UInt32) {
    let error = RPCError(code: .cancelled, message: "the call was cancelled")
    withState { s, wakes in
      guard s.streams[id] != nil else { return }
      if role == .client { s.core.resetStream(streamID: id, .cancel) }
      s.streams.fail(id, .local(error), &wakes, cancelHandler: false)
    }
  }

  // MARK: - Connection-level actions

  /// Sends GOAWAY (the last id never grows).
  package func goAway(lastStreamID: UInt32, _ code: ErrorCode = .noError, debug: String = "") {
    withState { s, _ in s.core.sendGoAway(lastStreamID: lastStreamID, code, debug: debug) }
  }

  /// Sends GOAWAY with the highest stream id the client has opened: the final word on which
  /// streams this server will process. Returns that id.
  @discardableResult
  package func finalGoAway(debug: String) -> UInt32 {
    withState { s, _ in
      let last = s.core.highestPeerStreamID
      s.core.sendGoAway(lastStreamID: last, .noError, debug: debug)
      return last
    }
  }

  /// From now on, tell the owner (`.idle`) whenever the last active call ends.
  package func notifyWhenIdle() {
    withState { s, wakes in
      s.streams.notifyIdle = true
      if s.streams.isEmpty { wakes.append(.notice(.idle)) }
    }
  }

  /// (server) Ends every open stream with `trailers` (or with nothing, for a stream inside a
  /// response message or one the client can resume: the caller closes the connection next, see
  /// ``ConnectionCore/CutCause/stop``) and cancels its handler. Returns the calls
  /// cut, by stream id; each is marked cut in the same lock hold (``wasCut(_:)``), so a cancelled
  /// handler that finishes at once already finds it so.
  package func cutAll(_ trailers: Trailers) -> [OpenCall] {
    withState { s, wakes in
      var cut: [OpenCall] = []
      for id in s.streams.ids {
        if s.core.cutStream(streamID: id, trailers, because: .stop), let call = s.streams.markCut(id) {
          cut.append(call)
        }
        s.streams.fail(id, .local(trailers.error ?? RPCError(code: .unavailable, message: "stopped")), &wakes)
      }
      return cut
    }
  }

  /// (loop thread) Whether bytes from the peer wait in the socket, not yet read: the peer is
  /// alive even if this side has not got to them (a keepalive must not blame the peer for
  /// this side's own delay).
  package var hasUnreadInput: Bool {
    guard loop.inEventLoop else { return true }  // fd is the loop's to use: assume alive
    return !fdClosed && Socket.readableBytes(fd) > 0
  }

  /// Closes the socket now, without waiting for the peer (after a flush grace ran out, or a
  /// client keepalive found the peer silent). Open streams fail as the connection lost.
  package func forceClose(reason: String = "closed after the flush grace") {
    loop.execute { [self] in closeSocket(reason: reason) }
  }

  package func ping(_ payload: UInt64) {
    withState { s, _ in s.core.sendPing(payload) }
  }

  /// Ends the connection with a GOAWAY carrying `code` (ping flood, limit), then closes.
  package func abort(_ code: ErrorCode, reason: String) {
    withState(forcingFlush: true) { s, wakes in
      var events: [ConnectionEvent] = []
      s.core.abort(code, reason: reason, into: &events)
      s.closeAfterFlush = true
      s.abortReason = s.abortReason ?? reason
      s.streams.failAll(.connectionLost("connection closed: \(reason)"), &wakes)
    }
  }

  /// Flushes everything queued, then closes the write side with FIN (never RST with frames
  /// unsent) and closes the socket once the peer closes too (or after `linger` ns).
  package func closeGracefully(linger: UInt64? = nil) {
    withState(forcingFlush: true) { s, _ in
      s.closeAfterFlush = true
      if let linger { s.linger = linger }
    }
  }

  /// Returns once the socket is closed: after a graceful close that is when the last frame has
  /// left and the peer's FIN came (or the linger ran out). A process that exits right after
  /// closing a connection awaits this, so that the frames it owes (a RESET, a GOAWAY) are not
  /// lost with it (PROTOCOL.md 13.4).
  package func waitUntilClosed() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let closed = state.withLock { s in
        if s.closedReason != nil { return true }
        s.closeWaiters.append(continuation)
        return false
      }
      if closed { continuation.resume() }
    }
  }

  // MARK: - Event processing (under the lock)

  /// Decides under the lock, acts after it: the one way the connection's state changes outside
  /// the loop's own reading. Output that `decide` queued is flushed (one flush requested per
  /// loop turn; `forcingFlush` requests one even with nothing queued, for a close); the wakes it
  /// collected (continuations, cancellations, notices) run once the lock is released, in order,
  /// because whoever they resume may call straight back in.
  @inline(__always) @discardableResult
  private func withState<T, E: Error>(
    forcingFlush: Bool = false, _ decide: (inout sending State, inout [Wake]) throws(E) -> sending T
  ) throws(E) -> T {
    var wakes: [Wake] = []
    let (result, flush) = try state.withLock { s throws(E) -> (T, Bool) in
      let result = try decide(&s, &wakes)
      return (result, Self.claimFlush(&s, force: forcingFlush))
    }
    if flush { requestFlush() }
    if !wakes.isEmpty { perform(wakes) }
    return result
  }

  private static func claimFlush(_ s: inout State, force: Bool = false) -> Bool {
    guard !s.flushScheduled, force || !s.core.outbound.isEmpty else { return false }
    s.flushScheduled = true
    return true
  }

  /// Ping policing (PROTOCOL.md 15): a token bucket of `maxPingsPerSecond` tokens, refilled
  /// continuously, sets how many PINGs the core may answer in the bytes about to be processed;
  /// the PING that finds none left fails the connection with GOAWAY(ENHANCE_YOUR_CALM, "too
  /// many pings") before it is answered, and nothing after it is processed.
  private func refillPingAllowance(_ s: inout State, now: UInt64) {
    let rate = Double(limits.maxPingsPerSecond)
    guard rate > 0 else { return }
    if s.pingTokensAt == 0 {
      s.pingTokens = rate
    } else {
      s.pingTokens = min(rate, s.pingTokens + Double(now &- s.pingTokensAt) / 1e9 * rate)
    }
    s.pingTokensAt = now
    s.core.pingAllowance = Int(s.pingTokens.rounded(.down))
  }

  /// Takes a token for each PING the core answered.
  private func chargePings(_ s: inout State) {
    let answered = s.core.pingsReceived - s.pingsSeen
    guard answered > 0 else { return }
    s.pingsSeen = s.core.pingsReceived
    s.pingTokens -= Double(answered)
  }

  /// A whole message for stream `id` (``StreamSlots/deliver(_:_:queue:array:)``); its credit
  /// returns as the bytes leave the connection: now, unless they wait in the inbox.
  @inline(__always)
  private static func deliver(
    _ id: UInt32, count: Int, _ s: inout State, _ wakes: inout [Wake],
    queue: (inout MessageQueue) -> Void, array: () -> [UInt8]
  ) {
    switch s.streams.deliver(id, &wakes, queue: queue, array: array) {
    case .queued:
      break
    case .consumed:
      s.core.consumed(streamID: id, bytes: count)
    case .secondResponse:
      // The framing is valid, only the call's shape is broken (PROTOCOL.md 7.2): CANCEL.
      s.core.consumed(streamID: id, bytes: count)
      s.core.resetStream(streamID: id, .cancel)
    }
  }

  /// The bytes one `process` call gave the core, where its `messageBytes` events lie.
  /// `@unchecked Sendable`: it is read only during that call, on the loop's thread, which the
  /// lock's `sending` state cannot see (passed bare, it would join the state's region).
  private struct Received: @unchecked Sendable {
    let bytes: UnsafeRawBufferPointer
  }

  private func apply(
    _ event: consuming ConnectionEvent, in received: Received, now: UInt64, _ s: inout State, _ wakes: inout [Wake]
  ) {
    switch consume event {
    case .ready(let settings):
      wakes.append(.notice(.ready(settings)))
      if let handshakeTimer { wakes.append(.cancelTimer(handshakeTimer)) }
    case .opened(let id, let head, let endStream):
      s.streams.open(id, StreamSlot(inputDone: endStream, method: head.method, openedAt: now))
      wakes.append(.notice(.opened(StreamHandle(connection: self, id: id), head, endStream: endStream)))
    case .headers(let id, let metadata):
      s.streams[id]?.headers = metadata
    case .message(let id, let message):
      // Reassembled from fragments: already an array of its own.
      Self.deliver(id, count: message.count, &s, &wakes, queue: { $0.append(message) }, array: { message })
    case .messageBytes(let id, let range):
      // Copied once: into the inbox, or (to a parked reader) into the array it gets.
      let message = UnsafeRawBufferPointer(rebasing: received.bytes[range])
      Self.deliver(
        id, count: range.count, &s, &wakes, queue: { $0.append(copying: message) }, array: { Array(message) })
    case .endOfInput(let id):
      s.streams.endOfInput(id, &wakes)
    case .trailers(let id, var trailers):
      // Ended at a checkpoint to be continued elsewhere (PROTOCOL.md 18.3): not the call's outcome.
      let resumable = s.core.resumptionOn && trailers.metadata[ResumableStreams.resumableKey] != nil
      if resumable {
        trailers.metadata = Metadata(trailers.metadata.entries.filter { $0.name != ResumableStreams.resumableKey })
      }
      s.streams.trailers(id, trailers, resumable: resumable, &wakes)
    case .streamReset(let id, let code, let reason, let byPeer):
      let failure: StreamFailure =
        byPeer
        ? .peerReset(code, reason, deadlinePassed: s.streams.deadlinePassed(id, now: MonotonicClock.now()))
        : .reset(code, reason)
      s.streams.fail(id, failure, &wakes)
    case .writable(let id):
      s.streams.writable(id, &wakes)
    case .goAway(let last, let code, let debug):
      wakes.append(.notice(.goAway(lastStreamID: last, code, debug: debug)))
    case .pingAck(let payload):
      wakes.append(.notice(.pingAck(payload)))
    case .checkpoint(let id, let consumed, let token):
      s.streams.checkpoint(id, consumed: consumed, token: token)
    case .connectionError(let error):
      s.closeAfterFlush = true
      s.abortReason = s.abortReason ?? "\(error)"
      s.flushScheduled = false  // force a flush of the GOAWAY below
      s.streams.failAll(.connectionLost("the connection failed: \(error)"), &wakes)
    }
  }

  private func perform(_ wake: Wake) {
    wake.perform(cancelTimer: { loop.cancel($0) }, notice: { onNotice(self, $0) })
  }

  private func perform(_ wakes: [Wake]) {
    for wake in wakes { perform(wake) }
  }

  // MARK: - I/O (loop thread only)

  private func requestFlush() {
    if loop.inEventLoop {
      loop.runAtTurnEnd { self.flush() }
    } else {
      loop.execute { self.flush() }
    }
  }

  /// One read per readiness event (the socket is level-triggered, so what is left is reported
  /// again): the handlers it wakes run and their replies leave before the next read.
  package func readable() {
    guard !fdClosed else { return }
    let scratch = loop.readScratch
    let chunk = min(limits.readChunk, scratch.count)
    var eof = false
    var completedFrame = false
    var failure: (any Error)?
    func readInto(_ tail: UnsafeMutableRawBufferPointer) -> Int {
      do {
        switch try Socket.read(fd, into: tail) {
        case .bytes(let n): return n
        case .eof: eof = true
        case .wouldBlock: break
        }
      } catch {
        failure = error
      }
      return 0
    }
    let count: Int
    if inbound.readableCount == 0 {
      // The usual case: no frame is split across reads, so read into the loop's shared
      // buffer and keep only what a split frame leaves over.
      count = readInto(UnsafeMutableRawBufferPointer(rebasing: scratch[..<chunk]))
      if count > 0 && !halfClosed && !discarding {
        let bytes = UnsafeRawBufferPointer(rebasing: scratch[..<count])
        let used = process(bytes)
        completedFrame = used > 0
        if used < count && !discarding { inbound.append(UnsafeRawBufferPointer(rebasing: bytes[used...])) }
      }
    } else {
      count = inbound.write(minimumSpace: chunk) { readInto($0) }
      if count > 0 && !halfClosed && !discarding {
        inbound.read { bytes in
          let used = process(bytes)
          completedFrame = used > 0
          return (used, ())
        }
      }
      if discarding { inbound.read { bytes in (bytes.count, ()) } }
      // A burst of large frames is over: give the memory back.
      if inbound.readableCount == 0 { inbound.shrink(to: 64) }
    }
    if count > 0 { traffic?.received.add(count, ordering: .relaxed) }
    if let failure { return connectionLost("read failed: \(failure)") }
    if eof { return connectionLost(halfClosed ? nil : "the peer closed the connection") }
    if count > 0 { watchPartialFrame(completedFrame: completedFrame) }
  }

  /// Keeps one timer running while a frame is half-read (see ``FrameClock``): a frame that takes
  /// longer than ``TransportLimits/frameTimeout`` to arrive fails the connection. Costs nothing
  /// per frame: the timer is armed once per partial frame at most, and again only when it fires.
  private func watchPartialFrame(completedFrame: Bool) {
    let partialLeft = inbound.readableCount > 0 && !discarding && !halfClosed
    let due = frameClock.afterRead(partialLeft: partialLeft, completedFrame: completedFrame, now: MonotonicClock.now())
    if frameTimer == nil, let due { armFrameTimer(at: due) }
  }

  private func armFrameTimer(at deadline: UInt64) {
    frameTimer = loop.schedule(at: deadline) { [self] in
      loop.execute { self.frameTimerFired() }
    }
  }

  private func frameTimerFired() {
    frameTimer = nil
    guard !fdClosed else { return }
    switch frameClock.check(now: MonotonicClock.now(), readPaused: readPaused) {
    case .idle:
      break
    case .checkAgain(let at):
      armFrameTimer(at: at)
    case .expired(let waited):
      let seconds = Double(waited / 1_000_000) / 1e3
      abort(
        .enhanceYourCalm,
        reason:
          "frame timeout: a frame took more than \(seconds) s to arrive (\(inbound.readableCount) bytes of it so far)")
    }
  }

  /// Feeds received bytes to the core and acts on what it says; returns the bytes it used.
  private func process(_ bytes: UnsafeRawBufferPointer) -> Int {
    let now = MonotonicClock.now()
    // The loop's reusable buffers, held in locals meanwhile: used as properties, every event
    // would pay a dynamic exclusivity check.
    var events: [ConnectionEvent] = []
    var wakes: [Wake] = []
    swap(&events, &self.events)
    swap(&wakes, &self.wakes)
    let received = Received(bytes: bytes)
    let (used, flush, closed) = state.withLock { s in
      let wasClosed = s.core.phase == .closed
      s.lastInboundAt = now
      refillPingAllowance(&s, now: now)
      let used = s.core.receive(bytes, into: &events)
      chargePings(&s)
      for index in events.indices {
        // Moved out (a trivial event left in its place), so that a message's bytes pass to
        // the stream's inbox without a retain and release per message.
        var event = ConnectionEvent.pingAck(0)
        swap(&event, &events[index])
        apply(event, in: received, now: now, &s, &wakes)
      }
      let closed = s.core.phase == .closed
      if !wasClosed && closed { return (used, Self.claimFlush(&s, force: true) || true, closed) }
      return (used, Self.claimFlush(&s), closed)
    }
    events.removeAll(keepingCapacity: true)
    self.events = events
    if closed { discarding = true }
    perform(wakes)
    wakes.removeAll(keepingCapacity: true)
    self.wakes = wakes
    if flush { loop.runAtTurnEnd { self.flush() } }
    return used
  }

  package func writable() { flush() }

  package func hangup() {
    connectionLost(halfClosed ? nil : "the connection was reset by the peer")
  }

  private func flush() {
    guard !fdClosed else { return }
    let (closeAfter, peerWindow, linger) = state.withLock { s in
      s.flushScheduled = false
      if writing.isEmpty {
        swap(&writing, &s.core.outbound)
        writeOffset = 0
      } else if !s.core.outbound.isEmpty {
        writing.append(contentsOf: s.core.outbound)
        s.core.outbound.removeAll(keepingCapacity: true)
      }
      return (s.closeAfterFlush, Int(s.core.peerSettings.connectionWindowSize), s.linger ?? limits.linger)
    }
    while writeOffset < writing.count {
      let written: Int?
      do {
        written = try writeSome()
      } catch {
        return connectionLost("write failed: \(error)")
      }
      guard let written else { break }
      writeOffset += written
      traffic?.sent.add(written, ordering: .relaxed)
    }
    let pendingBytes = writing.count - writeOffset
    if pendingBytes == 0 {
      let decision = trim.afterFlush(capacity: writing.frameCapacity, timerRunning: trimTimer != nil)
      writing.removeAll(keepingCapacity: decision != .drop)
      writeOffset = 0
      if decision == .keepAndStartTimer { startTrimTimer() }
    } else {
      trim.flushedPartly()
    }
    // Stop reading while the peer is not taking what we write, so memory stays bounded. DATA is
    // already bounded by the peer's connection window, so only bytes beyond that window (frames
    // owed for requests the peer keeps sending but never reads the answers to) can trip this;
    // a well-behaved peer never does, and two of them can't deadlock on it.
    readPaused = pendingBytes > limits.maxBufferedBytes + peerWindow
    updateInterest(write: pendingBytes > 0, read: !readPaused)
    if closeAfter && lingerTimer == nil {
      // Bounds the flush as well: a peer that stops reading cannot hold a closing socket open.
      lingerTimer = loop.schedule(at: MonotonicClock.now() &+ linger) { [self] in
        loop.execute { self.closeSocket(reason: self.state.withLock { $0.abortReason } ?? "closed") }
      }
    }
    if pendingBytes == 0 && closeAfter && !halfClosed {
      halfClosed = true
      Socket.shutdownWrite(fd)
    }
  }

  private func startTrimTimer() {
    trimTimer = loop.schedule(at: MonotonicClock.now() &+ limits.writeBufferTrimDelay) { [self] in
      loop.execute { self.trimWriteBuffers() }
    }
  }

  /// Gives back the capacity a burst left in both write buffers (the one being written and the
  /// core's, which take turns), once the connection has been quiet for a whole trim delay.
  private func trimWriteBuffers() {
    trimTimer = nil
    guard !fdClosed else { return }
    guard trim.timerFired() else { return startTrimTimer() }
    if writing.isEmpty { writing = OutboundBuffer() }
    state.withLock { s in
      if s.core.outbound.isEmpty && s.core.outbound.frameCapacity > WriteBufferTrim.idleCapacity {
        s.core.outbound = OutboundBuffer()
      }
    }
  }

  /// Write-buffer capacity held now (both buffers): what the trim gives back.
  package func writeBufferCapacity() async throws -> Int {
    try await loop.submit { [self] in
      writing.frameCapacity + state.withLock { $0.core.outbound.frameCapacity }
    }
  }

  /// One write of what is left of `writing`: a plain send while it holds frame bytes only, a
  /// gathered one (frames and the payloads they reference, up to 128 pieces) otherwise.
  /// Bytes written, or nil if the socket's buffer is full.
  private func writeSome() throws -> Int? {
    let offset = writeOffset
    if writing.referenceCount == 0 {
      return try writing.frameBytes.withUnsafeBytes { raw in
        try Socket.write(fd, UnsafeRawBufferPointer(rebasing: raw[offset...]))
      }
    }
    return try writing.withSegments(from: offset, maxSegments: min(128, Socket.maxBuffersPerWrite)) { pieces in
      let vectors = pieces.map(IOVector.init)
      return try vectors.withUnsafeBufferPointer { try Socket.writev(fd, $0) }
    }
  }

  private func updateInterest(write: Bool, read: Bool) {
    var wanted: Interest = []
    if read { wanted.insert(.read) }
    if write { wanted.insert(.write) }
    guard wanted != interest, let registration else { return }
    interest = wanted
    try? loop.setInterest(registration, wanted)
  }

  /// The socket is done (EOF, error, or our FIN answered). `reason` nil means an orderly close.
  private func connectionLost(_ reason: String?) {
    var wakes: [Wake] = []
    let why = state.withLock { s in
      let why = reason ?? s.abortReason ?? "the connection closed"
      Self.transportClosed(.connectionLost("connection to \(peer) lost: \(why)"), &s, &wakes)
      return why
    }
    perform(wakes)
    closeSocket(reason: why)
  }

  /// The socket is gone: the core closes and every stream fails, in one lock hold. A stream is
  /// opened only by a core that is not closed, under the same lock (``openStream(_:message:endStream:)``),
  /// so every stream is either failed here or never opened: none can wait on a dead socket.
  private static func transportClosed(_ failure: StreamFailure, _ s: inout State, _ wakes: inout [Wake]) {
    s.core.transportClosed()
    s.streams.failAll(failure, &wakes)
  }

  private func closeSocket(reason: String) {
    guard !fdClosed else { return }
    fdClosed = true
    if let registration { loop.deregister(registration) }
    registration = nil
    // Every timer that holds this connection goes now, so its memory is freed with the socket.
    for timer in [lingerTimer, trimTimer, handshakeTimer, frameTimer] { if let timer { loop.cancel(timer) } }
    lingerTimer = nil
    trimTimer = nil
    handshakeTimer = nil
    frameTimer = nil
    Socket.close(fd)
    var wakes: [Wake] = []
    let closeWaiters = state.withLock { s in
      s.closedReason = reason
      Self.transportClosed(.connectionLost("connection to \(peer) closed: \(reason)"), &s, &wakes)
      defer { s.closeWaiters.removeAll() }
      return s.closeWaiters
    }
    perform(wakes)
    onNotice(self, .closed(reason: reason))
    for waiter in closeWaiters { waiter.resume() }
  }
}
