import CBatonShims
import Glibc

// The body of the loop thread: one iteration of `run()` is one turn.
extension EventLoop {
  /// Turns until a stop is requested, then marks the loop stopped and drops what is left.
  func run() {
    while !self.stopRequested {
      let (timeout, sleeping) = self.prepareToWait()
      let count = Epoll.wait(
        self.epollFD,
        into: self.events,
        capacity: Self.eventCapacity,
        timeoutMilliseconds: timeout
      )
      if sleeping {
        self.shared.withLock { $0.sleeping = false }
      }
      if count > 0 {
        self.dispatchEvents(count)
      }
      self.runDueTimers()
      self.runQueuedWork()
      self.runTurnEnd()
    }

    let leftovers = self.shared.withLock { state in
      state.stopped = true
      state.sleeping = false
      var work: [Work] = []
      swap(&work, &state.work)
      return (work, state.timers.removeAll())
    }
    // Released here, outside the lock; queued work and timers never run.
    _ = leftovers
    self.slots.removeAll()
    self.turnEnd.removeAll()
  }

  /// Decides how long `epoll_wait` may block: 0 when work is queued or a timer is due,
  /// else until the earliest timer, else forever (-1). `sleeping` tells the caller it set
  /// the shared flag and must clear it after the wait.
  private func prepareToWait() -> (timeout: Int32, sleeping: Bool) {
    enum Plan {
      case poll
      case block(until: UInt64?)
    }
    // The flag is set under the same lock producers take to enqueue, after seeing no
    // work: a producer either queued before (seen here, so no block) or sees the flag
    // and signals the eventfd. No wakeup is lost.
    let plan = self.shared.withLock { state -> Plan in
      if !state.work.isEmpty {
        return .poll
      }
      guard let deadline = state.timers.earliestDeadline() else {
        state.sleeping = true
        return .block(until: nil)
      }
      if deadline <= MonotonicClock.now() {
        return .poll
      }
      state.sleeping = true
      return .block(until: deadline)
    }

    switch plan {
    case .poll:
      return (0, false)
    case .block(until: nil):
      // A timerfd still armed for a cancelled timer only causes one spurious wakeup.
      return (-1, true)
    case .block(until: let deadline?):
      if self.armedDeadline == deadline {
        return (-1, true)
      }
      if Epoll.arm(self.timerFD, at: deadline) {
        self.armedDeadline = deadline
        return (-1, true)
      }
      // The timerfd failed: fall back to epoll's millisecond timeout, rounded up so
      // the timer never fires early.
      self.armedDeadline = nil
      let now = MonotonicClock.now()
      let remaining = deadline > now ? deadline - now : 0
      return (Int32(clamping: (remaining + 999_999) / 1_000_000), true)
    }
  }

  private func dispatchEvents(_ count: Int) {
    for index in 0..<Int32(count) {
      let data = baton_epoll_event_data(self.events, index)
      let flags = baton_epoll_event_events(self.events, index)

      if data >= Self.timerToken {
        if data == Self.wakeToken {
          Epoll.drain(self.wakeFD)
        } else {
          Epoll.drain(self.timerFD)
          self.armedDeadline = nil
        }
        continue
      }

      // An event collected for a registration that a handler earlier in this batch
      // removed (or replaced after the fd number was reused) fails this check.
      let registration = Registration(packed: data)
      guard let slot = self.liveSlot(registration) else {
        continue
      }

      if flags & (BATON_EPOLLHUP | BATON_EPOLLERR) != 0 {
        if flags & BATON_EPOLLIN != 0 {
          slot.handler.readable()
          guard self.liveSlot(registration) != nil else {
            continue
          }
        }
        slot.handler.hangup()
        continue
      }

      if flags & BATON_EPOLLIN != 0, slot.interest.contains(.read) {
        slot.handler.readable()
      }
      if flags & BATON_EPOLLOUT != 0, let current = self.liveSlot(registration),
        current.interest.contains(.write)
      {
        current.handler.writable()
      }
    }
  }

  private func runDueTimers() {
    var due = self.spareTimers
    self.spareTimers = []
    self.shared.withLock { state in
      if !state.timers.isEmpty {
        state.timers.popDue(now: MonotonicClock.now(), into: &due)
      }
    }
    for work in due {
      work()
    }
    due.removeAll(keepingCapacity: true)
    self.spareTimers = due
  }

  private func runQueuedWork() {
    // Swap the queue with an empty array of retained capacity: one lock round trip per
    // batch, and no allocation in steady state.
    var batch = self.spareWork
    self.spareWork = []
    self.shared.withLock { state in
      swap(&state.work, &batch)
    }
    if !batch.isEmpty {
      let executor = self.asUnownedTaskExecutor()
      for work in batch {
        switch work {
        case .closure(let body):
          body()
        case .job(let job):
          job.runSynchronously(on: executor)
        }
        self.workSinceTurnEnd += 1
        if self.workSinceTurnEnd >= Self.workBetweenTurnEnds { self.runTurnEnd() }
      }
      batch.removeAll(keepingCapacity: true)
    }
    self.spareWork = batch
  }

  func runTurnEnd() {
    self.workSinceTurnEnd = 0
    while !self.turnEnd.isEmpty {
      var callbacks = self.turnEnd
      self.turnEnd = self.spareTurnEnd
      self.spareTurnEnd = []
      for callback in callbacks {
        callback()
      }
      callbacks.removeAll(keepingCapacity: true)
      self.spareTurnEnd = callbacks
    }
  }
}
