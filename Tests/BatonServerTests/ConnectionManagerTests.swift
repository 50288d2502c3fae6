import Testing

@testable import BatonServer

/// ``ConnectionManager``: one connection's drain (`serving → awaitingBarrier → finalGoAwaySent →
/// closing`, PROTOCOL.md 13.2), round trip, max age, idleness and keepalive, as actions, without
/// sockets or clocks. Times are plain nanosecond counts.
@Suite("ConnectionManager")
struct ConnectionManagerTests {
  typealias Manager = ConnectionManager
  static let ms: UInt64 = 1_000_000
  static let barrier = ConnectionManager.barrierProbe

  static func manager(_ policy: Manager.Policy = .init(barrierCap: 1_000 * ms), at start: UInt64 = 1_000 * ms)
    -> Manager
  {
    Manager(policy: policy, acceptedAt: start)
  }

  static func seen(_ now: UInt64, inbound: UInt64 = 0, calls: Int = 0, ended: UInt64 = 0) -> Manager.Observation {
    .init(now: now, lastInboundAt: inbound, activeCalls: calls, lastCallEndedAt: ended)
  }

  /// Drains `manager` at `now` and passes the barrier with its ACK: the final GOAWAY is out.
  static func drained(_ manager: inout Manager, now: UInt64, last: UInt32, calls: Int) -> [Manager.Action] {
    _ = manager.beginDrain(now: now)
    _ = manager.pingAck(barrier, now: now)
    return manager.finalGoAwaySent(lastStreamID: last, activeCalls: calls)
  }

  @Test("start measures the round trip and arms only the configured timers")
  func start() {
    var plain = Self.manager()
    #expect(plain.start(draining: false) == [.ping(Manager.rttProbe)])
    let policy = Manager.Policy(
      maxAge: 60_000 * Self.ms, idleTimeout: 5_000 * Self.ms, keepaliveInterval: 10_000 * Self.ms)
    var hygienic = Self.manager(policy, at: 0)
    #expect(
      hygienic.start(draining: false) == [
        .ping(Manager.rttProbe), .arm(.maxAge, at: 60_000 * Self.ms), .arm(.idle, at: 5_000 * Self.ms),
        .arm(.keepalive, at: 10_000 * Self.ms),
      ])
    var late = Self.manager(at: 0)
    let actions = late.start(draining: true)
    #expect(actions.prefix(3) == [.ping(Manager.rttProbe), .goAway, .ping(Self.barrier)])
    #expect(late.phase == .awaitingBarrier)
  }

  @Test("a new manager is serving; nothing but a drain's start applies")
  func initial() {
    var manager = Self.manager()
    #expect(manager.phase == .serving && !manager.isDraining)
    #expect(manager.barrierPassed(ack: nil).isEmpty, "no barrier before the drain began")
    #expect(manager.pingAck(Self.barrier, now: 0).isEmpty)
    #expect(manager.idle(activeCalls: 0).isEmpty, "a serving connection never closes for the drain")
    #expect(manager.phase == .serving)
  }

  @Test("the barrier waits four measured round trips, at least 10 ms, at most the cap; the cap before any")
  func barrierWait() {
    var unmeasured = Self.manager(at: 0)
    #expect(unmeasured.beginDrain(now: 5) == [.goAway, .ping(Self.barrier), .arm(.barrier, at: 5 + 1_000 * Self.ms)])
    var fast = Self.manager(at: 0)
    _ = fast.pingAck(Manager.rttProbe, now: 1 * Self.ms)
    #expect(fast.rtt == 1 * Self.ms)
    #expect(fast.beginDrain(now: 0).last == .arm(.barrier, at: 10 * Self.ms))
    var slow = Self.manager(at: 0)
    _ = slow.pingAck(Manager.rttProbe, now: 50 * Self.ms)
    #expect(slow.beginDrain(now: 0).last == .arm(.barrier, at: 200 * Self.ms))
    var capped = Self.manager(.init(barrierCap: 0), at: 0)
    #expect(capped.beginDrain(now: 0).last == .arm(.barrier, at: 0), "a cap of 0 skips the wait")
  }

  @Test("a drain begins once; it records when it began")
  func beginOnce() {
    var manager = Self.manager()
    #expect(!manager.beginDrain(now: 7).isEmpty)
    #expect(manager.drainStartedAt == 7 && manager.isDraining)
    #expect(manager.beginDrain(now: 8).isEmpty)
    #expect(manager.drainStartedAt == 7)
  }

  @Test(
    "the ACK of another PING (the round trip, a keepalive, anything else) is not the barrier",
    arguments: [Manager.rttProbe, Manager.keepaliveProbe, 0, 7, .max])
  func otherAckIsNotBarrier(_ ack: UInt64) {
    var manager = Self.manager()
    _ = manager.beginDrain(now: 0)
    #expect(manager.pingAck(ack, now: 1).isEmpty)
    #expect(manager.phase == .awaitingBarrier)
    #expect(manager.pingAck(Self.barrier, now: 2) == [.finalGoAway], "the real ACK still passes afterwards")
  }

  @Test("the barrier's ACK or its timer sends the final GOAWAY, once")
  func barrierOnlyOnce() {
    var byAck = Self.manager()
    _ = byAck.beginDrain(now: 0)
    #expect(byAck.pingAck(Self.barrier, now: 1) == [.finalGoAway])
    #expect(byAck.timerFired(.barrier, Self.seen(2)).isEmpty)
    var byTimer = Self.manager()
    _ = byTimer.beginDrain(now: 0)
    #expect(byTimer.timerFired(.barrier, Self.seen(2)) == [.finalGoAway])
    #expect(byTimer.pingAck(Self.barrier, now: 3).isEmpty)
    #expect(byTimer.finalGoAwaySent(lastStreamID: 5, activeCalls: 1).isEmpty)
    #expect(byTimer.phase == .finalGoAwaySent(lastStreamID: 5))
    #expect(byTimer.beginDrain(now: 4).isEmpty)
  }

  @Test("no close while awaiting the barrier, even with no calls")
  func noCloseBeforeFinalGoAway() {
    var manager = Self.manager()
    _ = manager.beginDrain(now: 0)
    #expect(manager.idle(activeCalls: 0).isEmpty)
    #expect(manager.phase == .awaitingBarrier)
  }

  @Test("after the final GOAWAY the connection closes at zero active calls, once")
  func closeWhenCallsEnd() {
    var manager = Self.manager()
    #expect(Self.drained(&manager, now: 0, last: 3, calls: 2).isEmpty)
    #expect(manager.idle(activeCalls: 1).isEmpty)
    #expect(manager.phase == .finalGoAwaySent(lastStreamID: 3))
    #expect(manager.idle(activeCalls: 0) == [.close])
    #expect(manager.phase == .closing)
    #expect(manager.idle(activeCalls: 0).isEmpty, "closing happens once")
    var quiet = Self.manager()
    #expect(Self.drained(&quiet, now: 0, last: 0, calls: 0) == [.close], "no calls: close with the final GOAWAY")
  }

  @Test("forceClosing closes from any phase, and closing is final", arguments: [0, 1, 2])
  func forceClosing(_ phase: Int) {
    var manager = Self.manager()
    if phase >= 1 { _ = manager.beginDrain(now: 0) }
    if phase >= 2 { _ = manager.pingAck(Self.barrier, now: 1) }
    manager.forceClosing()
    #expect(manager.phase == .closing)
    #expect(manager.beginDrain(now: 2).isEmpty)
    #expect(manager.barrierPassed(ack: nil).isEmpty)
    #expect(manager.finalGoAwaySent(lastStreamID: 3, activeCalls: 0).isEmpty, "a late final GOAWAY does not reopen")
    #expect(manager.idle(activeCalls: 0).isEmpty)
    #expect(manager.phase == .closing)
  }

  @Test("max age drains the connection and arms the grace; the grace cuts what is left")
  func maxAge() {
    var manager = Self.manager(.init(maxAge: 100 * Self.ms, maxAgeGrace: 30 * Self.ms, barrierCap: 0), at: 0)
    let actions = manager.timerFired(.maxAge, Self.seen(100 * Self.ms))
    #expect(
      actions == [
        .log("connection max age"), .goAway, .ping(Self.barrier), .arm(.barrier, at: 100 * Self.ms),
        .arm(.maxAgeGrace, at: 130 * Self.ms),
      ])
    #expect(
      manager.timerFired(.maxAgeGrace, Self.seen(130 * Self.ms)).first
        == .cut(reason: "the connection reached its maximum age and its grace period passed"))
  }

  @Test("idleness drains a connection without calls since the timeout, and re-arms otherwise")
  func idle() {
    let policy = Manager.Policy(idleTimeout: 100 * Self.ms)
    var busy = Self.manager(policy, at: 0)
    #expect(busy.timerFired(.idle, Self.seen(100 * Self.ms, calls: 1)) == [.arm(.idle, at: 200 * Self.ms)])
    var recent = Self.manager(policy, at: 0)
    #expect(
      recent.timerFired(.idle, Self.seen(100 * Self.ms, ended: 60 * Self.ms)) == [.arm(.idle, at: 160 * Self.ms)])
    var quiet = Self.manager(policy, at: 0)
    let actions = quiet.timerFired(.idle, Self.seen(100 * Self.ms, ended: 0))
    #expect(actions.prefix(2) == [.log("connection idle"), .goAway])
    #expect(quiet.isDraining)
  }

  @Test("keepalive: a quiet connection is pinged and closed if nothing comes back in time")
  func keepalive() {
    let policy = Manager.Policy(keepaliveInterval: 100 * Self.ms, keepaliveTimeout: 20 * Self.ms)
    var chatty = Self.manager(policy, at: 0)
    #expect(
      chatty.timerFired(.keepalive, Self.seen(100 * Self.ms, inbound: 50 * Self.ms))
        == [.arm(.keepalive, at: 150 * Self.ms)])
    var quiet = Self.manager(policy, at: 0)
    #expect(
      quiet.timerFired(.keepalive, Self.seen(100 * Self.ms, inbound: 0))
        == [.ping(Manager.keepaliveProbe), .arm(.keepaliveTimeout, at: 120 * Self.ms)])
    // An answer (any bytes after the PING) re-arms the keepalive from the bytes' time.
    #expect(
      quiet.timerFired(.keepaliveTimeout, Self.seen(120 * Self.ms, inbound: 110 * Self.ms))
        == [.arm(.keepalive, at: 210 * Self.ms)])
    var dead = Self.manager(policy, at: 0)
    _ = dead.timerFired(.keepalive, Self.seen(100 * Self.ms))
    #expect(
      dead.timerFired(.keepaliveTimeout, Self.seen(120 * Self.ms, inbound: 90 * Self.ms)) == [
        .log("connection keepalive timeout"), .abort(reason: "keepalive timeout: no answer to a PING"),
      ])
  }

  @Test("a timer that is not configured does nothing")
  func unconfigured() {
    var manager = Self.manager()
    #expect(manager.timerFired(.idle, Self.seen(1)).isEmpty)
    #expect(manager.timerFired(.keepalive, Self.seen(1)).isEmpty)
  }
}
