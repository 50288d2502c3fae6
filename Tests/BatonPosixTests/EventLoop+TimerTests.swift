import BatonPosix
import Synchronization
import Testing

@Suite("EventLoop timers")
struct EventLoopTimerTests {
  @Test("a timer fires on the loop, not before its deadline", .timeLimit(.minutes(1)))
  func firesNotBeforeDeadline() async {
    await withLoop { loop in
      for delay in [0, 1, 3, 20] {
        let deadline = MonotonicClock.now() + UInt64(delay) * 1_000_000
        let (firedAt, onLoop) = await withCheckedContinuation {
          (continuation: CheckedContinuation<(UInt64, Bool), Never>) in
          _ = loop.schedule(at: deadline) {
            continuation.resume(returning: (MonotonicClock.now(), loop.inEventLoop))
          }
        }
        #expect(firedAt >= deadline)
        #expect(onLoop)
      }
    }
  }

  @Test("timers fire in deadline order, equal deadlines in scheduling order", .timeLimit(.minutes(1)))
  func deadlineOrder() async {
    await withLoop { loop in
      let base = MonotonicClock.now() + 5_000_000
      // 0, 7, 14, … mod 50: a shuffled permutation of 50 slots 100 µs apart; then two ties.
      var plan = (0..<50).map { (label: $0, deadline: base + UInt64(($0 * 7) % 50) * 100_000) }
      plan.append((label: 50, deadline: base))
      plan.append((label: 51, deadline: base))
      let count = plan.count
      let expected = plan.enumerated()
        .sorted { ($0.element.deadline, $0.offset) < ($1.element.deadline, $1.offset) }
        .map(\.element.label)

      let fired = await withCheckedContinuation { (continuation: CheckedContinuation<[Int], Never>) in
        let fired = LoopConfined([Int]())
        // Parked, so no deadline can pass before the last timer is in.
        whileParked(loop) {
          for entry in plan {
            _ = loop.schedule(at: entry.deadline) {
              fired.value.append(entry.label)
              if fired.value.count == count {
                continuation.resume(returning: fired.value)
              }
            }
          }
        }
      }
      #expect(fired == expected)
    }
  }

  @Test("a cancelled timer never fires; cancel is idempotent and works from any thread", .timeLimit(.minutes(1)))
  func cancelledNeverFires() async {
    await withLoop { loop in
      let cancelledRan = Atomic<Int>(0)
      // Already due, but the loop is parked until after the cancel.
      let (first, second) = whileParked(loop) {
        let handle = loop.schedule(at: 0) { cancelledRan.add(1, ordering: .relaxed) }
        return (loop.cancel(handle), loop.cancel(handle))
      }
      #expect(first)
      #expect(!second)

      let onLoop = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
        loop.execute {
          // The loop cannot run timers while it runs this job.
          let handle = loop.schedule(at: 0) { cancelledRan.add(1, ordering: .relaxed) }
          continuation.resume(returning: loop.cancel(handle))
        }
      }
      #expect(onLoop)

      // A timer that does fire proves the loop went past both deadlines.
      let (fired, signal) = AsyncStream.makeStream(of: Void.self)
      _ = loop.schedule(at: 0) { signal.yield() }
      var iterator = fired.makeAsyncIterator()
      #expect(await iterator.next() != nil)
      #expect(cancelledRan.load(ordering: .relaxed) == 0)
    }
  }

  @Test("cancelling a timer that already fired returns false", .timeLimit(.minutes(1)))
  func cancelAfterFiring() async {
    await withLoop { loop in
      let (fired, signal) = AsyncStream.makeStream(of: Void.self)
      let handle = loop.schedule(at: 0) { signal.yield() }
      var iterator = fired.makeAsyncIterator()
      #expect(await iterator.next() != nil)
      #expect(!loop.cancel(handle))
    }
  }

  @Test("a timer on another loop is not cancelled by this one", .timeLimit(.minutes(1)))
  func cancelOnWrongLoop() async {
    let group = EventLoopGroup(threads: 2)
    defer { group.shutdown() }
    let handle = group.loops[0].schedule(after: .seconds(3600)) {}
    #expect(!group.loops[1].cancel(handle))
    #expect(group.loops[0].cancel(handle))
  }

  @Test("an earlier timer scheduled from another thread wakes a loop sleeping on a later one", .timeLimit(.minutes(1)))
  func earlierTimerWakesLoop() async throws {
    try await withLoop { loop in
      let far = loop.schedule(after: .seconds(3600)) {}
      // One round trip so the loop has seen the far timer and is about to sleep on it.
      _ = try await loop.submit {}
      let start = MonotonicClock.now()
      let firedAt = await withCheckedContinuation { (continuation: CheckedContinuation<UInt64, Never>) in
        _ = loop.schedule(after: .milliseconds(5)) { continuation.resume(returning: MonotonicClock.now()) }
      }
      #expect(firedAt >= start + 5_000_000)
      #expect(loop.cancel(far))
    }
  }

  @Test("10,000 timers mostly cancelled: the rest fire, in deadline order", .timeLimit(.minutes(1)))
  func manyCancelledTimers() async {
    await withLoop { loop in
      let base = MonotonicClock.now()
      let cancelledRan = Atomic<Int>(0)
      let fired = await withCheckedContinuation { (continuation: CheckedContinuation<[Int], Never>) in
        let fired = LoopConfined([Int]())
        // Parked, so every cancel lands before the loop looks at any deadline.
        whileParked(loop) {
          var handles: [TimerHandle] = []
          // Scheduled in reverse so that deadline order differs from scheduling order.
          for index in (0..<10_000).reversed() {
            let deadline = base + UInt64(index) * 100
            if index % 100 == 0 {
              _ = loop.schedule(at: deadline) {
                fired.value.append(index)
                if fired.value.count == 100 {
                  continuation.resume(returning: fired.value)
                }
              }
            } else {
              handles.append(loop.schedule(at: deadline) { cancelledRan.add(1, ordering: .relaxed) })
            }
          }
          for handle in handles {
            loop.cancel(handle)
          }
        }
      }
      #expect(fired == Array(stride(from: 0, to: 10_000, by: 100)))
      #expect(cancelledRan.load(ordering: .relaxed) == 0)
    }
  }
}
