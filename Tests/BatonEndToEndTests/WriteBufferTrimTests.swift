import BatonCore
import BatonPosix
@testable import BatonTransport
import Testing

@Suite("Write buffer trim", .timeLimit(.minutes(1)))
struct WriteBufferTrimTests {
  @Test("small buffers are kept, a burst's is kept with one timer, a huge one is dropped")
  func afterFlush() {
    var trim = WriteBufferTrim()
    #expect(trim.afterFlush(capacity: WriteBufferTrim.idleCapacity, timerRunning: false) == .keep)
    #expect(trim.afterFlush(capacity: WriteBufferTrim.idleCapacity + 1, timerRunning: false) == .keepAndStartTimer)
    #expect(trim.afterFlush(capacity: WriteBufferTrim.busyCapacity, timerRunning: true) == .keepWhileTimerRuns, "one timer at a time")
    #expect(trim.afterFlush(capacity: WriteBufferTrim.busyCapacity + 1, timerRunning: true) == .drop)
  }

  @Test("the timer trims only after a delay with no flush")
  func timer() {
    var trim = WriteBufferTrim()
    #expect(trim.afterFlush(capacity: 128 << 10, timerRunning: false) == .keepAndStartTimer)
    #expect(trim.timerFired() == true, "no flush since the timer started: trim")
    #expect(trim.afterFlush(capacity: 128 << 10, timerRunning: false) == .keepAndStartTimer, "the next burst starts a new timer")
    #expect(trim.afterFlush(capacity: 128 << 10, timerRunning: true) == .keepWhileTimerRuns)
    #expect(trim.timerFired() == false, "a flush meanwhile: still busy, look again")
    trim.flushedPartly()
    #expect(trim.timerFired() == false, "a flush that left bytes to write is busy too")
    #expect(trim.timerFired() == true)
  }

  @Test("after a burst a connection keeps its write buffer, and gives it back once quiet")
  func connectionTrims() async throws {
    let group = EventLoopGroup(threads: 1)
    let loop = group.next()
    let (serverFD, clientFD) = try Socket.makePair()
    var limits = TransportLimits()
    limits.writeBufferTrimDelay = 100_000_000
    let (ready, readyContinuation) = AsyncStream.makeStream(of: Void.self)
    // The server reads and drops: only the client's writing matters here.
    let server = Connection(
      fd: serverFD, loop: loop, role: .server, peer: "pair", settings: .defaults, limits: limits
    ) { _, notice in
      guard case .opened(let stream, _, _) = notice else { return }
      stream.attach(Task { while (try? await stream.receive()) != nil {} })
    }
    let client = Connection(
      fd: clientFD, loop: loop, role: .client, peer: "pair", settings: .defaults, limits: limits
    ) { _, notice in
      if case .ready = notice { readyContinuation.yield() }
    }
    server.start()
    client.start()
    for await _ in ready { break }
    let stream = try client.openStream(RequestHead(method: "test/Sink"))
    // 2,000 messages queued in one loop job, so that one flush writes all ~146 KB.
    let message = [UInt8](repeating: 7, count: 64)
    try await loop.submit {
      for _ in 0..<2_000 { _ = try stream.enqueue(message) }
    }
    let afterBurst = try await client.writeBufferCapacity()
    #expect(afterBurst > WriteBufferTrim.idleCapacity, "the burst's buffer was not kept: \(afterBurst) bytes")
    // Quiet from now on: within a few trim delays the capacity goes back.
    let deadline = MonotonicClock.now() &+ 5_000_000_000
    var capacity = afterBurst
    while capacity > WriteBufferTrim.idleCapacity && MonotonicClock.now() < deadline {
      try await Task.sleep(for: .milliseconds(20))
      capacity = try await client.writeBufferCapacity()
    }
    #expect(capacity <= WriteBufferTrim.idleCapacity, "still holding \(capacity) bytes after 5 s quiet")
    client.forceClose()
    server.forceClose()
    group.shutdown()
  }
}
