import Testing

@testable import BatonClient

@Suite("Client keepalive as a value: when to PING, when a silent peer is dead")
struct KeepaliveTests {
  private let second: UInt64 = 1_000_000_000

  @Test("a quiet connection with calls waiting is pinged after the interval and dead after the timeout")
  func silentPeer() {
    var keepalive = Keepalive(interval: second, timeout: second, whenIdle: false)
    let r1 = keepalive.tick(now: 500_000_000, lastInbound: 0, activeCalls: 1)
    #expect(r1 == .sleep(until: second))
    guard case .ping(_, let checkAt) = keepalive.tick(now: second, lastInbound: 0, activeCalls: 1) else {
      Issue.record("expected a PING")
      return
    }
    #expect(checkAt == 2 * second)
    let r2 = keepalive.tick(now: 1_500_000_000, lastInbound: 0, activeCalls: 1)
    #expect(r2 == .sleep(until: 2 * second))
    let r3 = keepalive.tick(now: 2 * second, lastInbound: 0, activeCalls: 1)
    #expect(r3 == .dead(silentFor: 2 * second))
  }

  @Test("any frame after the PING proves the peer alive, and a busy connection never pings")
  func alive() {
    var keepalive = Keepalive(interval: second, timeout: second, whenIdle: false)
    guard case .ping = keepalive.tick(now: second, lastInbound: 0, activeCalls: 1) else {
      Issue.record("expected a PING")
      return
    }
    // The ACK (or any frame) arrived at 1.2 s.
    let after = keepalive.tick(now: 2 * second, lastInbound: 1_200_000_000, activeCalls: 1)
    #expect(after == .sleep(until: 2_200_000_000))
    // Frames keep arriving: no PING.
    let r4 = keepalive.tick(now: 3 * second, lastInbound: 2_900_000_000, activeCalls: 5)
    #expect(r4 == .sleep(until: 3_900_000_000))
  }

  @Test("no calls waiting: no PING unless asked to ping idle connections")
  func idle() {
    var quiet = Keepalive(interval: second, timeout: second, whenIdle: false)
    let r5 = quiet.tick(now: 10 * second, lastInbound: 0, activeCalls: 0)
    #expect(r5 == .sleep(until: 11 * second))
    var chatty = Keepalive(interval: second, timeout: second, whenIdle: true)
    guard case .ping(let first, _) = chatty.tick(now: 10 * second, lastInbound: 0, activeCalls: 0) else {
      Issue.record("expected a PING")
      return
    }
    _ = chatty.tick(now: 11 * second, lastInbound: 10 * second + 1, activeCalls: 0)
    guard case .ping(let second, _) = chatty.tick(now: 12 * second, lastInbound: 10 * second + 1, activeCalls: 0) else {
      Issue.record("expected a second PING")
      return
    }
    #expect(first != second, "each PING has its own payload")
  }
}

@Suite("The client-wide retry budget as a value")
struct RetryThrottleTests {
  private let second: UInt64 = 1_000_000_000

  @Test("with no traffic the floor allows minimumPerSecond × window retries, then none")
  func floor() {
    var throttle = RetryThrottle(Client.RetryBudget(ratio: 0.2, minimumPerSecond: 1, window: .seconds(5)))
    let allowed = (0..<20).filter { _ in throttle.tryRetry(now: 100 * second) }.count
    #expect(allowed == 5)
  }

  @Test("each call adds a fifth of a retry; retries beyond that fail")
  func ratio() {
    var throttle = RetryThrottle(Client.RetryBudget(ratio: 0.2, minimumPerSecond: 0, window: .seconds(10)))
    for _ in 0..<100 { throttle.recordCall(now: 5 * second) }
    let allowed = (0..<100).filter { _ in throttle.tryRetry(now: 5 * second) }.count
    #expect(allowed == 20)
  }

  @Test("calls and retries older than the window no longer count")
  func window() {
    var throttle = RetryThrottle(Client.RetryBudget(ratio: 0.5, minimumPerSecond: 0, window: .seconds(2)))
    for _ in 0..<10 { throttle.recordCall(now: 10 * second) }
    let first = (0..<10).filter { _ in throttle.tryRetry(now: 10 * second) }.count
    #expect(first == 5)
    let oneMore = throttle.tryRetry(now: 11 * second)
    #expect(!oneMore)
    // Two seconds later the old calls and retries have left the window.
    for _ in 0..<4 { throttle.recordCall(now: 12 * second) }
    let later = (0..<10).filter { _ in throttle.tryRetry(now: 12 * second) }.count
    #expect(later == 2)
  }
}

@Suite("The wait queue: first come, first served, bounded by the pool")
struct WaitQueueTests {
  @Test("grants in arrival order and stops at the first waiter it cannot serve")
  func order() {
    var queue = WaitQueue<String>()
    for name in ["a", "b", "c"] { queue.park(queue.reserveID(), name) }
    var slots = 2
    let granted = queue.grant { _ -> Int? in
      guard slots > 0 else { return nil }
      slots -= 1
      return slots
    }
    #expect(granted.map(\.0) == ["a", "b"])
    #expect(queue.count == 1)
    #expect(queue.grant { _ in 1 }.map(\.0) == ["c"])
    #expect(queue.isEmpty)
  }

  @Test("a waiter cancelled before it parked is refused when it tries")
  func cancelledEarly() {
    var queue = WaitQueue<String>()
    let id = queue.reserveID()
    let removed = queue.remove(id, cancelling: true)
    #expect(removed == nil)
    let marked = queue.wasCancelledEarly(id)
    let markedAgain = queue.wasCancelledEarly(id)
    #expect(marked)
    #expect(!markedAgain, "the mark is consumed")
  }

  @Test("removed waiters are skipped, and thousands of them leave no garbage behind")
  func compaction() {
    var queue = WaitQueue<Int>()
    var ids: [UInt64] = []
    for value in 0..<5_000 {
      let id = queue.reserveID()
      ids.append(id)
      queue.park(id, value)
    }
    for id in ids.dropLast() { _ = queue.remove(id) }
    #expect(queue.grant { _ in () }.map(\.0) == [4_999])
    #expect(queue.isEmpty)
  }
}

@Suite("Client keepalive: this side's own delays are not the peer's silence")
struct KeepaliveStarvationTests {
  private let second: UInt64 = 1_000_000_000

  @Test("a verdict tick that runs late (this side was starved) waits a little longer before declaring the peer dead")
  func lateTick() {
    var keepalive = Keepalive(interval: second, timeout: second, whenIdle: false)
    _ = keepalive.tick(now: second, lastInbound: 0, activeCalls: 1)
    let late = keepalive.tick(now: 3 * second, lastInbound: 0, activeCalls: 1, late: second)
    #expect(late == .sleep(until: 3 * second + second / 2))
    let onTime = keepalive.tick(now: 3 * second + second / 2, lastInbound: 0, activeCalls: 1, late: 0)
    #expect(onTime == .dead(silentFor: 3 * second + second / 2))
  }

  @Test("input waiting unread in the socket proves the peer alive")
  func unreadInput() {
    var keepalive = Keepalive(interval: second, timeout: second, whenIdle: false)
    _ = keepalive.tick(now: second, lastInbound: 0, activeCalls: 1)
    let waiting = keepalive.inputWaiting(now: 2 * second)
    #expect(waiting == .sleep(until: 3 * second))
    // The PING is forgotten: a quiet connection pings again before any verdict.
    guard case .ping = keepalive.tick(now: 3 * second, lastInbound: 0, activeCalls: 1) else {
      Issue.record("expected a new PING")
      return
    }
  }
}

@Suite("Client keepalive: a connection under suspicion")
struct KeepaliveSuspicionTests {
  @Test("from the unanswered PING until any frame arrives, the connection is under suspicion (no new calls)")
  func suspicion() {
    let second: UInt64 = 1_000_000_000
    var keepalive = Keepalive(interval: second, timeout: 2 * second, whenIdle: false)
    #expect(!keepalive.awaitingAnswer)
    _ = keepalive.tick(now: second, lastInbound: 0, activeCalls: 1)
    #expect(keepalive.awaitingAnswer)
    _ = keepalive.tick(now: 2 * second, lastInbound: 1_500_000_000, activeCalls: 1)
    #expect(!keepalive.awaitingAnswer, "a frame came back: alive")
  }
}
