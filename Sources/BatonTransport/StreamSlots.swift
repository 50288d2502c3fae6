package import BatonCore
package import BatonPosix

/// Who waits on which stream of one connection, and what each waiter gets when something
/// arrives: the stream-slot bookkeeping, apart from the wire (``ConnectionCore``) and the socket.
///
/// A value, mutated under the connection's lock. Every method decides and returns what must
/// happen once the lock is released as ``Wake``s (a continuation to resume, a task or timer to
/// cancel, a notice) and what the wire must do as its result (credit to give back, a stream to
/// reset); it never resumes, cancels or sends anything itself. So each rule here (a reader
/// parked before the message, a writer waiting for credit when TRAILERS arrive, a release with
/// unread messages) is tested as a value, without a socket (`StreamSlotsTests`).
package struct StreamSlots {
  /// What to do once the connection's lock is released, in order.
  package enum Wake {
    case deliver(UnsafeContinuation<[UInt8]?, any Error>, [UInt8]?)
    case failReceive(UnsafeContinuation<[UInt8]?, any Error>, any Error)
    case resume(UnsafeContinuation<Void, any Error>, (any Error)?)
    case cancelTask(Task<Void, Never>)
    case cancelTimer(TimerHandle)
    case notice(Connection.Notice)

    /// Carries the wake out: continuations resume and tasks are cancelled here; a timer and a
    /// notice go to whoever owns them (the connection's loop, its owner).
    @inline(__always)
    package func perform(cancelTimer: (TimerHandle) -> Void, notice: (Connection.Notice) -> Void) {
      switch self {
      case .deliver(let continuation, let message): continuation.resume(returning: message)
      case .failReceive(let continuation, let error): continuation.resume(throwing: error)
      case .resume(let continuation, let error):
        if let error { continuation.resume(throwing: error) } else { continuation.resume() }
      case .cancelTask(let task): task.cancel()
      case .cancelTimer(let timer): cancelTimer(timer)
      case .notice(let value): notice(value)
      }
    }
  }

  private var table = StreamTable<StreamSlot>()
  private var handlerTasks = StreamTable<Task<Void, Never>>()
  /// Send `.idle` when the last slot is released (a draining server asks for it).
  package var notifyIdle = false
  /// When the last call ended (MonotonicClock ns; 0 before any).
  package private(set) var lastCallEndedAt: UInt64 = 0

  package init() {}

  // The per-message paths (a read, a write, a credit) look a slot up through these: inlined, so
  // that the lookup reads the table in place instead of copying it out (a retain and release of
  // its storage per message otherwise, which cost a streaming call about a fifth of its speed).
  package var count: Int {
    @inline(__always) get { table.count }
  }
  package var isEmpty: Bool {
    @inline(__always) get { table.isEmpty }
  }
  package var ids: [UInt32] { table.keysArray.sorted() }
  package subscript(id: UInt32) -> StreamSlot? {
    @inline(__always) get { table[id] }
  }
  package func hasHandler(_ id: UInt32) -> Bool { handlerTasks[id] != nil }

  /// Borrows a slot in place: the per-message paths read it without a retain and release.
  @inline(__always)
  package func withSlot<Result>(_ id: UInt32, _ body: (borrowing StreamSlot) -> Result) -> Result? {
    table.withValue(id, body)
  }

  /// A stream opened (by this client, or by the peer's OPEN).
  package mutating func open(_ id: UInt32, _ slot: StreamSlot) { table[id] = slot }

  // MARK: - What arrives

  /// Where a received message went.
  package enum Delivery {
    /// To a parked reader, or dropped (no slot): its credit goes back now.
    case consumed
    /// Into the inbox: its credit goes back as the reader takes it.
    case queued
    /// A second response message on a call that takes one (PROTOCOL.md 7.2): the stream has
    /// failed with INTERNAL; the wire must reset it (CANCEL) and the credit goes back now.
    case secondResponse
  }

  /// A message for stream `id`: to its parked reader, or into its inbox (by `queue`), counted
  /// for checkpoints. `array` makes the message a reader gets; `queue` appends it to the inbox.
  @inline(__always)
  package mutating func deliver(
    _ id: UInt32, _ wakes: inout [Wake], queue: (inout MessageQueue) -> Void, array: () -> [UInt8]
  ) -> Delivery {
    let queued = table.withValue(id) { slot -> Bool? in
      slot.received &+= 1
      guard let receiver = slot.receiver else {
        if slot.singleResponse && !slot.inbox.isEmpty { return nil }
        queue(&slot.inbox)
        return true
      }
      slot.receiver = nil
      wakes.append(.deliver(receiver, array()))
      return false
    }
    switch queued {
    case true?: return .queued
    case false?, nil: return .consumed
    case .some(nil):
      let error = RPCError(
        code: .internal, message: "the server sent more than one response message for a call that takes one")
      fail(id, .local(error), &wakes)
      return .secondResponse
    }
  }

  /// No more messages will arrive on `id` (END_STREAM from a client).
  @inline(__always)
  package mutating func endOfInput(_ id: UInt32, _ wakes: inout [Wake]) {
    guard let slot = table[id] else { return }
    slot.inputDone = true
    if let receiver = slot.receiver {
      slot.receiver = nil
      wakes.append(.deliver(receiver, nil))
    }
  }

  /// (client) The server's status for `id`. With `resumable` (protocol 1.1, the status carried
  /// the resumable mark, already removed), the stream failed to be continued elsewhere instead.
  package mutating func trailers(
    _ id: UInt32, _ trailers: Trailers, resumable: Bool, _ wakes: inout [Wake]
  ) {
    guard let slot = table[id] else { return }
    if resumable { slot.failure = .resumable(trailers.message) }
    slot.trailers = trailers
    slot.inputDone = true
    // A reader with messages still to take reads them first; a write waiting for credit is done
    // with OK (the rest is dropped), as in `enqueue`.
    slot.endWaits(
      reader: slot.inbox.isEmpty ? slot.endError.map(StreamSlot.ReaderEnd.failure) ?? .end : nil,
      writer: slot.failure ?? trailers.error, finisher: nil, &wakes)
  }

  /// Stream `id` may send again: its parked writer goes on, or the next one will not wait.
  @inline(__always)
  package mutating func writable(_ id: UInt32, _ wakes: inout [Wake]) {
    guard let slot = table[id] else { return }
    if let writer = slot.writer {
      slot.writer = nil
      wakes.append(.resume(writer, nil))
    } else {
      slot.writableEarly = true
    }
  }

  /// (client) The server's checkpoint of `id` (1.1): it covers the messages received so far.
  package mutating func checkpoint(_ id: UInt32, consumed: UInt64, token: [UInt8]) {
    guard let slot = table[id] else { return }
    slot.checkpoint = StreamHandle.Checkpoint(index: slot.received, consumed: consumed, token: token)
  }

  // MARK: - Failing and releasing

  /// Fails every waiter of stream `id` with `failure` (unless it already ended with a status or
  /// a failure, which they get instead) and, with `cancelHandler`, cancels its handler.
  package mutating func fail(
    _ id: UInt32, _ failure: StreamFailure, _ wakes: inout [Wake], cancelHandler: Bool = true
  ) {
    guard let slot = table[id] else { return }
    if slot.failure == nil && slot.trailers == nil { slot.failure = failure }
    let error: any Error = slot.failure ?? failure
    slot.endWaits(reader: .failure(error), writer: error, finisher: nil, &wakes)
    if cancelHandler, let task = handlerTasks.removeValue(forKey: id) { wakes.append(.cancelTask(task)) }
  }

  package mutating func failAll(_ failure: StreamFailure, _ wakes: inout [Wake]) {
    for id in table.keysArray { fail(id, failure, &wakes) }
  }

  /// What a release leaves to the wire: the bytes whose credit goes back.
  package struct Released {
    /// Returned so that it is freed after the lock.
    package let slot: StreamSlot
    /// Unread messages and an unconsumed batch: their credit goes back now.
    package let unreadBytes: Int
  }

  /// Forgets stream `id`: whoever still waits on it (a writer or reader left running past the
  /// end of its call) learns that the call has ended instead of waiting for ever; its deadline
  /// timer is cancelled; the owner hears `.idle` if it asked and this was the last stream.
  package mutating func release(_ id: UInt32, now: UInt64, _ wakes: inout [Wake]) -> Released? {
    guard let slot = table.removeValue(forKey: id) else { return nil }
    if slot.receiver != nil || slot.writer != nil || slot.finisher != nil {
      let ended = StreamFailure.released
      slot.endWaits(reader: .failure(ended), writer: ended, finisher: ended, &wakes)
    } else {
      slot.endWaits(reader: nil, writer: nil, finisher: nil, &wakes)  // the deadline timer
    }
    if !handlerTasks.isEmpty { handlerTasks[id] = nil }
    lastCallEndedAt = now
    let unread = slot.inbox.removeAll() + slot.lent
    slot.lent = 0
    if table.isEmpty && notifyIdle { wakes.append(.notice(.idle)) }
    return Released(slot: slot, unreadBytes: unread)
  }

  // MARK: - Waiters

  /// (server) Remembers the handler task so that a reset or deadline can cancel it; false if the
  /// stream has already failed or gone (the caller cancels the task at once).
  package mutating func attach(_ id: UInt32, task: Task<Void, Never>) -> Bool {
    guard let slot = table[id], slot.failure == nil else { return false }
    handlerTasks[id] = task
    return true
  }

  /// Arms stream `id`'s deadline timer; false if the stream has gone (cancel the timer).
  package mutating func setTimer(_ id: UInt32, _ timer: TimerHandle, deadline: UInt64) -> Bool {
    guard let slot = table[id] else { return false }
    slot.timer = timer
    slot.deadline = deadline
    return true
  }

  /// Whether stream `id` has a deadline and it has passed by `now` (MonotonicClock ns).
  package func deadlinePassed(_ id: UInt32, now: UInt64) -> Bool {
    guard let deadline = table[id]?.deadline else { return false }
    return deadline <= now
  }

  /// Parks a writer until stream `id` may send again, unless it may now (`streamOpen` false: the
  /// stream ended on the wire, nothing more will be sent) or has failed.
  package mutating func parkWriter(
    _ id: UInt32, _ continuation: UnsafeContinuation<Void, any Error>, streamOpen: Bool, _ wakes: inout [Wake]
  ) {
    guard let slot = table[id] else { return wakes.append(.resume(continuation, nil)) }
    if let failure = slot.failure { return wakes.append(.resume(continuation, failure)) }
    if slot.writableEarly || !streamOpen {
      slot.writableEarly = false
      return wakes.append(.resume(continuation, nil))
    }
    slot.writer = continuation
  }

  /// (client) Parks until the server ends stream `id` or it fails. Not thrown: the caller reads
  /// the outcome (trailers or failure) from the slot, because it decides whether it may retry.
  package mutating func parkFinisher(
    _ id: UInt32, _ continuation: UnsafeContinuation<Void, any Error>, _ wakes: inout [Wake]
  ) {
    guard let slot = table[id], slot.failure == nil, slot.trailers == nil else {
      return wakes.append(.resume(continuation, nil))
    }
    slot.finisher = continuation
  }

  /// (server) Marks stream `id` cut by the server's stop (its handler then reports it so, and it
  /// does not count as drained); returns it as an open call.
  package mutating func markCut(_ id: UInt32) -> Connection.OpenCall? {
    guard let slot = table[id] else { return nil }
    slot.cut = true
    return Connection.OpenCall(id: id, method: slot.method, openedAt: slot.openedAt)
  }
}

/// One stream's waiters, inbox and outcome.
///
/// A class so that the inbox is mutated in place: copying a struct out of the table and back
/// would copy the whole queue on every message (copy-on-write), quadratic in its depth. Only
/// touched under the connection's lock, which is also why its inbox skips the dynamic
/// exclusivity check (a thread-local lookup per message otherwise).
package final class StreamSlot {
  @exclusivity(unchecked) package var inbox = MessageQueue()
  /// Bytes the reader took in its last batch beyond the message it asked for: credited when it
  /// comes back for more (the batch is then consumed), so that inbox and batch together stay
  /// within the window.
  package var lent = 0
  /// No more messages will arrive (END_STREAM from a client, TRAILERS at a client).
  package var inputDone = false
  package var failure: StreamFailure?
  package var headers: Metadata?
  package var trailers: Trailers?
  package var receiver: UnsafeContinuation<[UInt8]?, any Error>?
  package var writer: UnsafeContinuation<Void, any Error>?
  package var finisher: UnsafeContinuation<Void, any Error>?
  /// A `.writable` arrived before the writer had parked.
  package var writableEarly = false
  /// (client) Messages received on the stream so far, and the server's latest checkpoint
  /// (1.1), which covers the first `checkpoint.index` of them.
  package var received = 0
  package var checkpoint: StreamHandle.Checkpoint?
  package var timer: TimerHandle?
  /// When ``timer`` fires (MonotonicClock ns).
  package var deadline: UInt64?
  /// (client) The call's shape allows one response message (unary): a second one fails it
  /// (PROTOCOL.md 7.2).
  package let singleResponse: Bool
  /// (server) The call's method and when its OPEN arrived (MonotonicClock ns).
  package let method: String
  package let openedAt: UInt64
  /// (server) The server's stop cut the call before its handler ended it.
  package var cut = false

  package init(inputDone: Bool = false, singleResponse: Bool = false, method: String = "", openedAt: UInt64 = 0) {
    self.inputDone = inputDone
    self.singleResponse = singleResponse
    self.method = method
    self.openedAt = openedAt
  }

  /// How a parked reader's wait ends.
  package enum ReaderEnd {
    /// No more messages: the reader gets nil.
    case end
    case failure(any Error)
  }

  /// The stream's waits end: the parked reader gets `reader` (nil: it stays parked), the parked
  /// writer and finisher resume (nil: without an error), the deadline timer is cancelled. The
  /// one place that hands waiters their outcome, whether the stream ended with a status, failed,
  /// or was released.
  package func endWaits(
    reader readerEnd: ReaderEnd?, writer writerError: (any Error)?, finisher finisherError: (any Error)?,
    _ wakes: inout [StreamSlots.Wake]
  ) {
    if let readerEnd, let receiver {
      self.receiver = nil
      switch readerEnd {
      case .end: wakes.append(.deliver(receiver, nil))
      case .failure(let error): wakes.append(.failReceive(receiver, error))
      }
    }
    if let writer {
      self.writer = nil
      wakes.append(.resume(writer, writerError))
    }
    if let finisher {
      self.finisher = nil
      wakes.append(.resume(finisher, finisherError))
    }
    if let timer {
      self.timer = nil
      wakes.append(.cancelTimer(timer))
    }
  }

  /// The error a reader sees once the input has ended: a failure, or (client) a non-OK status.
  package var endError: (any Error)? {
    if let failure { return failure }
    if inputDone, let error = trailers?.error { return error }
    return nil
  }
}
