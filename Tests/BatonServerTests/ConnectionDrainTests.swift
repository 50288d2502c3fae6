import Testing

@testable import BatonServer

/// ``ConnectionDrain``: one connection's graceful stop,
/// `serving → awaitingBarrier → finalGoAwaySent → closing` (PROTOCOL.md section 13.2).
@Suite("ConnectionDrain")
struct ConnectionDrainTests {
  @Test("a new drain is serving and not draining; nothing but begin applies")
  func initial() {
    var drain = ConnectionDrain()
    #expect(drain.state == .serving)
    #expect(!drain.isDraining)
    #expect(drain.barrierPassed(ack: nil) == false, "no barrier before the drain began")
    #expect(drain.barrierPassed(ack: 7) == false)
    #expect(drain.mayClose(activeCalls: 0) == false, "a serving connection never closes for the drain")
    #expect(drain.state == .serving)
  }

  @Test("begin sends the barrier PING once; a second begin is refused and keeps the first PING")
  func beginTwice() {
    var drain = ConnectionDrain()
    #expect(drain.begin(ping: 7) == true)
    #expect(drain.state == .awaitingBarrier(ping: 7))
    #expect(drain.isDraining)
    #expect(drain.begin(ping: 8) == false)
    #expect(drain.state == .awaitingBarrier(ping: 7))
  }

  @Test("the ACK of the barrier PING passes the barrier")
  func ackPassesBarrier() {
    var drain = ConnectionDrain()
    _ = drain.begin(ping: 7)
    #expect(drain.barrierPassed(ack: 7) == true)
  }

  @Test(
    "the ACK of a different PING (an RTT probe, a keepalive) is not the barrier", arguments: [UInt64(0), 6, 8, .max])
  func otherAckIsNotBarrier(_ ack: UInt64) {
    var drain = ConnectionDrain()
    _ = drain.begin(ping: 7)
    #expect(drain.barrierPassed(ack: ack) == false)
    #expect(drain.state == .awaitingBarrier(ping: 7))
    #expect(drain.barrierPassed(ack: 7) == true, "the real ACK still passes afterwards")
  }

  @Test("the bounded timer passes the barrier without an ACK")
  func timerPassesBarrier() {
    var drain = ConnectionDrain()
    _ = drain.begin(ping: 7)
    #expect(drain.barrierPassed(ack: nil) == true)
  }

  @Test("once the final GOAWAY is out, neither a late ACK nor the timer passes the barrier again")
  func barrierOnlyOnce() {
    var drain = ConnectionDrain()
    _ = drain.begin(ping: 7)
    #expect(drain.barrierPassed(ack: 7) == true)
    drain.finalGoAwaySent(lastStreamID: 5)
    #expect(drain.state == .finalGoAwaySent(lastStreamID: 5))
    #expect(drain.barrierPassed(ack: nil) == false)
    #expect(drain.barrierPassed(ack: 7) == false)
    #expect(drain.begin(ping: 9) == false)
  }

  @Test("mayClose is false while awaiting the barrier, even with no calls")
  func noCloseBeforeFinalGoAway() {
    var drain = ConnectionDrain()
    _ = drain.begin(ping: 7)
    #expect(drain.mayClose(activeCalls: 0) == false)
    #expect(drain.state == .awaitingBarrier(ping: 7))
  }

  @Test("after the final GOAWAY, mayClose waits for zero active calls, then moves to closing once")
  func closeWhenCallsEnd() {
    var drain = ConnectionDrain()
    _ = drain.begin(ping: 7)
    _ = drain.barrierPassed(ack: 7)
    drain.finalGoAwaySent(lastStreamID: 3)
    #expect(drain.mayClose(activeCalls: 2) == false)
    #expect(drain.mayClose(activeCalls: 1) == false)
    #expect(drain.state == .finalGoAwaySent(lastStreamID: 3))
    #expect(drain.mayClose(activeCalls: 0) == true)
    #expect(drain.state == .closing)
    #expect(drain.mayClose(activeCalls: 0) == false, "closing happens once")
    #expect(drain.isDraining)
  }

  @Test("a server may skip the barrier and send the final GOAWAY straight away (PROTOCOL.md 13.2)")
  func skipBarrier() {
    var drain = ConnectionDrain()
    drain.finalGoAwaySent(lastStreamID: 0)
    #expect(drain.isDraining)
    #expect(drain.mayClose(activeCalls: 0) == true)
  }

  @Test("forceClosing closes from any phase", arguments: [0, 1, 2])
  func forceClosing(_ phase: Int) {
    var drain = ConnectionDrain()
    if phase >= 1 { _ = drain.begin(ping: 1) }
    if phase >= 2 { drain.finalGoAwaySent(lastStreamID: 1) }
    drain.forceClosing()
    #expect(drain.state == .closing)
    #expect(drain.isDraining)
    #expect(drain.begin(ping: 2) == false)
    #expect(drain.barrierPassed(ack: nil) == false)
    #expect(drain.mayClose(activeCalls: 0) == false)
  }

  @Test("closing is final: a late finalGoAwaySent (racing a hard stop) does not reopen the drain")
  func closingIsFinal() {
    var drain = ConnectionDrain()
    _ = drain.begin(ping: 1)
    drain.forceClosing()
    drain.finalGoAwaySent(lastStreamID: 3)
    #expect(drain.state == .closing)
  }
}
