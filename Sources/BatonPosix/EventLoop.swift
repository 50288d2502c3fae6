import CBatonShims
import Glibc
import Synchronization

/// One thread running epoll, and a Swift `TaskExecutor` for that thread.
///
/// A task started with `executorPreference: loop` runs its jobs on the loop's thread between
/// I/O events, so it can touch connection state owned by the loop without a thread hop.
///
/// Each turn of the loop:
/// 1. waits in `epoll_wait`: not at all if work is queued, else until the earliest timer
///    (armed on a timerfd, so with nanosecond precision), else indefinitely;
/// 2. calls the handlers of ready file descriptors (at most 256 events per turn);
/// 3. runs the timers that are due, in deadline order;
/// 4. runs the closures and executor jobs that were queued before this step began, in FIFO
///    order (anything they queue runs next turn, so a busy producer cannot starve I/O);
/// 5. runs the turn-end callbacks (repeating until none are left).
///
/// Other threads wake the loop through an eventfd, and only while it is (about to be)
/// blocked in `epoll_wait`: a busy loop takes work from other threads without any syscall.
///
/// Thread-safe: ``execute(_:)``, ``schedule(at:_:)``, ``cancel(_:)``, ``inEventLoop`` and
/// executor enqueues. Loop thread only: ``register(fd:interest:handler:)``,
/// ``setInterest(_:_:)``, ``deregister(_:)`` and ``runAtTurnEnd(_:)``, plus all the
/// loop-owned state they touch.
package final class EventLoop: TaskExecutor, @unchecked Sendable {
  // @unchecked: `shared` is guarded by its lock; every `var` below it is touched only on
  // the loop's thread (checked by preconditions on the entry points that reach them).

  /// The loop's position in its group; its thread is named `baton-loop-<index>`.
  package let index: Int

  let epollFD: Int32
  let wakeFD: Int32
  let timerFD: Int32
  let events: UnsafeMutableRawPointer
  let shared: Locked<Shared>
  /// `pthread_self()` of the loop thread while it runs, else 0.
  let owner = Atomic<UInt>(0)
  let thread = Locked<pthread_t?>(nil)

  // MARK: Loop-thread state

  /// Registrations indexed by fd.
  var slots: [Slot?] = []
  var lastGeneration: UInt32 = 0
  var turnEnd: [() -> Void] = []
  var spareTurnEnd: [() -> Void] = []
  var spareWork: [Work] = []
  /// Items of work run since the turn-end callbacks last ran (loop thread only).
  var workSinceTurnEnd = 0
  var spareTimers: [@Sendable () -> Void] = []
  /// The deadline the timerfd is armed for, if it has not fired yet.
  var armedDeadline: UInt64?
  var stopRequested = false
  /// One read buffer shared by every connection of this loop (loop thread only): a connection
  /// reads into it and keeps only the bytes of a frame split across reads, so an idle
  /// connection holds no read buffer at all.
  package let readScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 16)

  static let eventCapacity: Int32 = 256
  /// `epoll_data` values of the loop's own fds; never equal to a packed registration,
  /// whose low half is a nonnegative fd.
  static let wakeToken = UInt64.max
  static let timerToken = UInt64.max - 1

  /// What other threads share with the loop.
  struct Shared {
    var work: [Work] = []
    var timers = TimerQueue()
    /// The loop is in, or about to enter, a blocking `epoll_wait`: whoever clears this
    /// must signal the eventfd.
    var sleeping = false
    /// The thread has exited; new work is dropped.
    var stopped = false
    var wakeups = 0
  }

  enum Work: Sendable {
    case closure(@Sendable () -> Void)
    case job(UnownedJob)
  }

  struct Slot {
    var generation: UInt32
    var interest: Interest
    let handler: any IOHandler
  }

  /// Creates the loop's epoll set, eventfd and timerfd. The thread starts separately.
  static func make(index: Int) throws(IOError) -> EventLoop {
    let epollFD = try Epoll.create()
    var wakeFD: Int32 = -1
    var timerFD: Int32 = -1
    do {
      wakeFD = try Epoll.makeEventFD()
      timerFD = try Epoll.makeTimerFD()
      try Epoll.add(epollFD, fd: wakeFD, events: BATON_EPOLLIN, data: Self.wakeToken)
      try Epoll.add(epollFD, fd: timerFD, events: BATON_EPOLLIN, data: Self.timerToken)
    } catch {
      for fd in [epollFD, wakeFD, timerFD] where fd >= 0 {
        Socket.close(fd)
      }
      throw error
    }
    return EventLoop(index: index, epollFD: epollFD, wakeFD: wakeFD, timerFD: timerFD)
  }

  private init(index: Int, epollFD: Int32, wakeFD: Int32, timerFD: Int32) {
    self.index = index
    self.epollFD = epollFD
    self.wakeFD = wakeFD
    self.timerFD = timerFD
    self.events = .allocate(
      byteCount: baton_epoll_event_size() * Int(Self.eventCapacity),
      alignment: MemoryLayout<UInt64>.alignment
    )
    self.shared = Locked(Shared())
  }

  deinit {
    // Only reached once the thread has exited (it holds a reference while it runs), and
    // nothing signals the eventfd after `stopped` is set, so closing cannot race a wakeup.
    Socket.close(self.epollFD)
    Socket.close(self.wakeFD)
    Socket.close(self.timerFD)
    self.events.deallocate()
    self.readScratch.deallocate()
  }

  // MARK: - Thread-safe API

  /// Whether the caller is running on this loop's thread.
  package var inEventLoop: Bool {
    self.owner.load(ordering: .relaxed) == UInt(pthread_self())
  }

  /// Runs `work` on the loop thread soon, after everything queued before it (FIFO).
  /// Callable from any thread, including the loop's own (the work then runs next turn).
  /// Work queued after the loop stopped is dropped.
  package func execute(_ work: @escaping @Sendable () -> Void) {
    self.enqueue(.closure(work))
  }

  /// Runs `work` on the loop and returns its result, or rethrows its error.
  /// - Throws: `CancellationError` if the loop has already stopped. Work still queued when
  ///   the loop stops is dropped and this never returns, so do not race it with
  ///   ``EventLoopGroup/shutdown()``.
  package func submit<Result: Sendable>(
    _ work: @escaping @Sendable () throws -> Result
  ) async throws -> Result {
    try await withCheckedThrowingContinuation { continuation in
      let accepted = self.enqueue(
        .closure {
          continuation.resume(with: Swift.Result { try work() })
        }
      )
      if !accepted {
        continuation.resume(throwing: CancellationError())
      }
    }
  }

  /// Runs `work` on the loop at or after `deadline` (``MonotonicClock`` nanoseconds), never
  /// before. Timers with the same deadline run in the order they were scheduled. Callable
  /// from any thread.
  package func schedule(at deadline: UInt64, _ work: @escaping @Sendable () -> Void) -> TimerHandle {
    let (id, wake) = self.shared.withLock { state -> (UInt64, Bool) in
      guard !state.stopped else {
        // Never runs; `work` is released by the caller's frame, outside the lock.
        return (state.timers.makeID(), false)
      }
      let (id, isEarliest) = state.timers.insert(deadline: deadline, work)
      // A sleeping loop waits for the earliest deadline it knew; an earlier one needs it
      // to wake and rearm.
      return (id, isEarliest && Self.claimWakeup(&state))
    }
    if wake {
      Epoll.signal(self.wakeFD)
    }
    return TimerHandle(id: id, loop: ObjectIdentifier(self))
  }

  /// Runs `work` on the loop once `delay` has elapsed. Callable from any thread.
  package func schedule(after delay: Duration, _ work: @escaping @Sendable () -> Void) -> TimerHandle {
    self.schedule(at: MonotonicClock.deadline(after: delay), work)
  }

  /// Cancels a timer. Callable from any thread, idempotent.
  ///
  /// Returns true if the timer was pending and now never runs; false if it already ran (or
  /// is running), was already cancelled, or belongs to another loop.
  @discardableResult
  package func cancel(_ timer: TimerHandle) -> Bool {
    guard timer.loop == ObjectIdentifier(self) else {
      return false
    }
    // The closure is released after the lock is dropped: its captures' deinits may call
    // back into this loop.
    let removed = self.shared.withLock { $0.timers.cancel(timer.id) }
    return removed != nil
  }

  /// Whether the loop's thread has exited (after ``EventLoopGroup/shutdown()``).
  package var hasStopped: Bool {
    self.shared.withLock { $0.stopped }
  }

  /// Timers scheduled and not yet run or cancelled (tests: a closed connection leaves none).
  package var pendingTimerCount: Int {
    self.shared.withLock { $0.timers.count }
  }

  /// How many times another thread has signalled the eventfd to wake this loop
  /// (diagnostics and tests).
  package var wakeupCount: Int {
    self.shared.withLock { $0.wakeups }
  }

  // MARK: - TaskExecutor

  /// Queues an executor job; it runs on the loop thread in FIFO order with ``execute(_:)``
  /// work. Jobs queued after the loop stopped never run.
  package func enqueue(_ job: consuming ExecutorJob) {
    self.enqueue(.job(UnownedJob(job)))
  }

  /// Queues `work`; false if the loop has stopped (the work is then released, unrun, when
  /// the caller drops it, outside the lock).
  @discardableResult
  private func enqueue(_ work: Work) -> Bool {
    let (accepted, wake) = self.shared.withLock { state -> (Bool, Bool) in
      guard !state.stopped else {
        return (false, false)
      }
      state.work.append(work)
      return (true, Self.claimWakeup(&state))
    }
    if wake {
      Epoll.signal(self.wakeFD)
    }
    return accepted
  }

  /// Whether the caller must signal the eventfd: true for exactly one caller per sleep.
  /// The loop itself is never asleep while it runs code, so its own enqueues never signal.
  private static func claimWakeup(_ state: inout Shared) -> Bool {
    guard state.sleeping else {
      return false
    }
    state.sleeping = false
    state.wakeups += 1
    return true
  }

  // MARK: - Loop-thread API

  /// Runs `work` on this loop thread after the current turn's I/O events, timers and queued
  /// work (e.g. to flush writes once per turn), and within a long batch of queued work after
  /// every ``workBetweenTurnEnds`` items. Loop thread only. No deduplication: the same
  /// callback added twice runs twice.
  package func runAtTurnEnd(_ work: @escaping () -> Void) {
    precondition(self.inEventLoop, "runAtTurnEnd must be called on the loop's thread")
    self.turnEnd.append(work)
  }

  /// Counts one item of work done on the loop outside its queue (a handler started in place):
  /// like a queued item, every ``workBetweenTurnEnds`` of them run the turn-end callbacks, so
  /// replies leave while the turn goes on. Loop thread only.
  package func noteWorkDone() {
    self.workSinceTurnEnd += 1
    if self.workSinceTurnEnd >= Self.workBetweenTurnEnds { self.runTurnEnd() }
  }

  /// Queued items a turn runs before it also runs the turn-end callbacks. A server turn that
  /// runs 50 unary handlers sends the first 16 replies while it works on the rest, so the
  /// client starts on them instead of waiting for the whole turn: the two sides overlap
  /// (64 unary callers on one connection: 137–156 k → 173–204 k calls/s on this VM).
  package static let workBetweenTurnEnds = 16

  /// Registers `fd` for readiness events delivered to `handler` until ``deregister(_:)``.
  /// The loop keeps a strong reference to `handler` until then. Loop thread only.
  /// - Throws: ``IOError`` from `epoll_ctl` (e.g. EEXIST if `fd` is already registered,
  ///   EBADF if it is not open).
  package func register(fd: Int32, interest: Interest, handler: any IOHandler) throws -> Registration {
    precondition(self.inEventLoop, "register must be called on the loop's thread")
    guard fd >= 0 else {
      throw IOError(errno: EBADF, call: "epoll_ctl")
    }
    self.lastGeneration &+= 1
    if self.lastGeneration == 0 {
      self.lastGeneration = 1
    }
    let registration = Registration(fd: fd, generation: self.lastGeneration)
    try Epoll.add(self.epollFD, fd: fd, events: interest.epollEvents, data: registration.packed)
    let index = Int(fd)
    if index >= self.slots.count {
      self.slots.append(contentsOf: repeatElement(nil, count: max(index + 1 - self.slots.count, self.slots.count)))
    }
    self.slots[index] = Slot(generation: registration.generation, interest: interest, handler: handler)
    return registration
  }

  /// Changes which events `registration` receives; no syscall if nothing changes. A stale
  /// registration (already deregistered) is ignored. Loop thread only.
  /// - Throws: ``IOError`` from `epoll_ctl`.
  package func setInterest(_ registration: Registration, _ interest: Interest) throws {
    precondition(self.inEventLoop, "setInterest must be called on the loop's thread")
    guard var slot = self.liveSlot(registration), slot.interest != interest else {
      return
    }
    try Epoll.modify(self.epollFD, fd: registration.fd, events: interest.epollEvents, data: registration.packed)
    slot.interest = interest
    self.slots[Int(registration.fd)] = slot
  }

  /// The current interest of a live registration, or nil if it is stale. Loop thread only.
  package func interest(of registration: Registration) -> Interest? {
    precondition(self.inEventLoop, "interest(of:) must be called on the loop's thread")
    return self.liveSlot(registration)?.interest
  }

  /// Stops events for `registration` and releases its handler; later events already
  /// collected in this turn are dropped. Does not close the fd. Idempotent; a stale
  /// registration is ignored. Loop thread only.
  package func deregister(_ registration: Registration) {
    precondition(self.inEventLoop, "deregister must be called on the loop's thread")
    guard self.liveSlot(registration) != nil else {
      return
    }
    Epoll.remove(self.epollFD, fd: registration.fd)
    self.slots[Int(registration.fd)] = nil
  }

  @inline(__always)
  func liveSlot(_ registration: Registration) -> Slot? {
    let index = Int(registration.fd)
    guard index < self.slots.count, let slot = self.slots[index],
      slot.generation == registration.generation
    else {
      return nil
    }
    return slot
  }
}
