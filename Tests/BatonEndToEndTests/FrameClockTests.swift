import Testing

@testable import BatonTransport

/// The frame timeout's rule, with explicit times: deterministic on any machine.
@Suite("Frame clock")
struct FrameClockTests {
  let second: UInt64 = 1_000_000_000

  @Test("a frame dripped in, read after read with none completed, expires one timeout after its first bytes")
  func slowFrameExpires() {
    var clock = FrameClock(timeout: 10 * second)
    #expect(clock.afterRead(partialLeft: true, completedFrame: false, now: 100 * second) == 110 * second)
    for t in stride(from: 101, through: 109, by: 1) {
      _ = clock.afterRead(partialLeft: true, completedFrame: false, now: UInt64(t) * second)
    }
    #expect(clock.check(now: 109 * second, readPaused: false) == .checkAgain(at: 110 * second))
    #expect(clock.check(now: 110 * second, readPaused: false) == .expired(waited: 10 * second))
  }

  @Test("a busy stream whose every read ends mid-frame never expires: each completed frame restarts the clock")
  func busyStreamNeverExpires() {
    var clock = FrameClock(timeout: 10 * second)
    var t: UInt64 = 0
    for _ in 0..<1_000 {  // a read every 3 s for 3,000 s, each completing a frame and starting the next
      t += 3 * second
      let due = clock.afterRead(partialLeft: true, completedFrame: true, now: t)
      #expect(due == t + 10 * second)
      #expect(clock.check(now: t + 2 * second, readPaused: false) == .checkAgain(at: t + 10 * second))
    }
  }

  @Test("no partial frame left: nothing to watch; a later partial frame starts a new clock")
  func wholeReadsStopTheClock() {
    var clock = FrameClock(timeout: 10 * second)
    _ = clock.afterRead(partialLeft: true, completedFrame: false, now: 0)
    #expect(clock.afterRead(partialLeft: false, completedFrame: true, now: 50 * second) == nil)
    #expect(clock.check(now: 60 * second, readPaused: false) == .idle)
    #expect(clock.afterRead(partialLeft: true, completedFrame: false, now: 70 * second) == 80 * second)
  }

  @Test("while this side does not read (backpressure), the peer is not blamed")
  func pausedReadsDoNotCount() {
    var clock = FrameClock(timeout: 10 * second)
    _ = clock.afterRead(partialLeft: true, completedFrame: false, now: 0)
    #expect(clock.check(now: 30 * second, readPaused: true) == .checkAgain(at: 40 * second))
    #expect(clock.check(now: 39 * second, readPaused: false) == .checkAgain(at: 40 * second))
    #expect(clock.check(now: 40 * second, readPaused: false) == .expired(waited: 10 * second))
  }
}
