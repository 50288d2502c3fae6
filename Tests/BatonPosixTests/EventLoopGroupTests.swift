import BatonPosix
import Synchronization
import Testing

@Suite("EventLoopGroup")
struct EventLoopGroupTests {
  @Test("next() cycles through the loops in order", .timeLimit(.minutes(1)))
  func roundRobin() {
    let group = EventLoopGroup(threads: 3)
    defer { group.shutdown() }
    #expect(group.loops.count == 3)
    let picked = (0..<7).map { _ in group.next() }
    for (index, loop) in picked.enumerated() {
      #expect(loop === group.loops[index % 3])
    }
    #expect(group.loops.map(\.index) == [0, 1, 2])
  }

  @Test("each loop runs on its own thread named baton-loop-N", .timeLimit(.minutes(1)))
  func threadNames() async throws {
    let group = EventLoopGroup(threads: 2)
    defer { group.shutdown() }
    for loop in group.loops {
      let name = try await loop.submit { EventLoop.currentThreadName }
      #expect(name == "baton-loop-\(loop.index)")
    }
  }

  @Test("a group of zero threads still has one loop")
  func atLeastOneLoop() {
    let group = EventLoopGroup(threads: 0)
    defer { group.shutdown() }
    #expect(group.loops.count == 1)
  }

  @Test("shutdown runs work queued before it, joins every thread and is idempotent", .timeLimit(.minutes(1)))
  func shutdownJoins() {
    let group = EventLoopGroup(threads: 2)
    let ran = Atomic<Int>(0)
    for loop in group.loops {
      #expect(!loop.hasStopped)
      for _ in 0..<1000 {
        loop.execute { ran.add(1, ordering: .relaxed) }
      }
    }
    group.shutdown()
    #expect(ran.load(ordering: .relaxed) == 2000)
    #expect(group.loops.allSatisfy { $0.hasStopped })
    group.shutdown()
  }

  @Test("work queued after shutdown is dropped and released at once", .timeLimit(.minutes(1)))
  func workAfterShutdownIsReleased() {
    let group = EventLoopGroup(threads: 1)
    group.shutdown()
    let released = Locked(false)
    do {
      let token = ReleaseToken { released.withLock { $0 = true } }
      group.loops[0].execute { token.touch() }
    }
    #expect(released.withLock { $0 })
  }

  @Test("submit on a stopped loop throws CancellationError instead of hanging", .timeLimit(.minutes(1)))
  func submitAfterShutdown() async {
    let group = EventLoopGroup(threads: 1)
    group.shutdown()
    await #expect(throws: CancellationError.self) {
      try await group.loops[0].submit { 1 }
    }
  }

  @Test("a timer scheduled on a stopped loop never runs and cancelling it reports false")
  func timerAfterShutdown() {
    let group = EventLoopGroup(threads: 1)
    group.shutdown()
    let handle = group.loops[0].schedule(at: 0) {}
    #expect(!group.loops[0].cancel(handle))
  }

  @Test("the shared group has at least one loop and hands them out")
  func sharedGroup() {
    #expect(!EventLoopGroup.shared.loops.isEmpty)
    let loop = EventLoopGroup.shared.next()
    #expect(EventLoopGroup.shared.loops.contains { $0 === loop })
  }
}

/// Calls `onRelease` when deallocated.
final class ReleaseToken: Sendable {
  private let onRelease: @Sendable () -> Void

  init(_ onRelease: @escaping @Sendable () -> Void) {
    self.onRelease = onRelease
  }

  func touch() {}

  deinit {
    self.onRelease()
  }
}
