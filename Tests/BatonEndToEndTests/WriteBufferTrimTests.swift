import BatonCore
import BatonPosix
import Testing

@testable import BatonTransport

@Suite("Write buffer trim", .timeLimit(.minutes(10)))
struct WriteBufferTrimTests {
  @Test("small buffers are kept, a burst's is kept with one timer, a huge one is dropped")
  func afterFlush() {
    var trim = WriteBufferTrim()
    #expect(trim.afterFlush(capacity: WriteBufferTrim.idleCapacity, timerRunning: false) == .keep)
    #expect(trim.afterFlush(capacity: WriteBufferTrim.idleCapacity + 1, timerRunning: false) == .keepAndStartTimer)
    #expect(
      trim.afterFlush(capacity: WriteBufferTrim.busyCapacity, timerRunning: true) == .keepWhileTimerRuns,
      "one timer at a time")
    #expect(trim.afterFlush(capacity: WriteBufferTrim.busyCapacity + 1, timerRunning: true) == .drop)
  }

  @Test("the timer trims only after a delay with no flush")
  func timer() {
    var trim = WriteBufferTrim()
    #expect(trim.afterFlush(capacity: 128 << 10, timerRunning: false) == .keepAndStartTimer)
    #expect(trim.timerFired() == true, "no flush since the timer started: trim")
    #expect(
      trim.afterFlush(capacity: 128 << 10, timerRunning: false) == .keepAndStartTimer,
      "the next burst starts a new timer")
    #expect(trim.afterFlush(capacity: 128 << 10, timerRunning: true) == .keepWhileTimerRuns)
    #expect(trim.timerFired() == false, "a flush meanwhile: still busy, look again")
    trim.flushedPartly()
    #expect(trim.timerFired() == false, "a flush that left bytes to write is busy too")
    #expect(trim.timerFired() == true)
  }

  @Test("after a burst a connection keeps its write buffer, and gives it back once quiet")
  func connectionTrims() async throws {
    // Kept: with a trim delay no test outlives, the timer cannot fire before the measurement
    // however slow the machine is (with a short one it could, and took the burst's buffer).
    let keeping = try await Burst(trimDelay: 3_600_000_000_000)
    let afterBurst = try await keeping.client.writeBufferCapacity()
    #expect(afterBurst > WriteBufferTrim.idleCapacity, "the burst's buffer was not kept: \(afterBurst) bytes")
    keeping.close()

    // Given back: the same burst with a short delay; quiet from then on, the capacity goes back
    // once the timer has run. Polled (the trim announces itself with no event), generously bounded.
    let trimming = try await Burst(trimDelay: 100_000_000)
    let deadline = ContinuousClock.now + .seconds(30)
    var capacity = try await trimming.client.writeBufferCapacity()
    while capacity > WriteBufferTrim.idleCapacity && ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(20))
      capacity = try await trimming.client.writeBufferCapacity()
    }
    #expect(capacity <= WriteBufferTrim.idleCapacity, "still holding \(capacity) bytes after 30 s quiet")
    trimming.close()
  }

  /// A connected pair on a loop of its own whose client has just written one burst: 2,000
  /// 64-byte messages queued in one loop job, so that one flush writes all ~146 KB.
  private struct Burst {
    let group: EventLoopGroup
    let client: Connection
    let server: Connection

    init(trimDelay: UInt64) async throws {
      group = EventLoopGroup(threads: 1)
      let loop = group.next()
      let (serverFD, clientFD) = try Socket.makePair()
      var limits = TransportLimits()
      limits.writeBufferTrimDelay = trimDelay
      let (ready, readyContinuation) = AsyncStream.makeStream(of: Void.self)
      // The server reads and drops: only the client's writing matters here.
      server = Connection(
        fd: serverFD, loop: loop, role: .server, peer: "pair", settings: .defaults, limits: limits
      ) { _, notice in
        guard case .opened(let stream, _, _) = notice else { return }
        stream.attach(Task { while (try? await stream.receive()) != nil {} })
      }
      client = Connection(
        fd: clientFD, loop: loop, role: .client, peer: "pair", settings: .defaults, limits: limits
      ) { _, notice in
        if case .ready = notice { readyContinuation.yield() }
      }
      server.start()
      client.start()
      for await _ in ready { break }
      let stream = try client.openStream(RequestHead(method: "test/Sink"))
      let message = [UInt8](repeating: 7, count: 64)
      try await loop.submit {
        for _ in 0..<2_000 { _ = try stream.enqueue(message) }
      }
    }

    func close() {
      client.forceClose()
      server.forceClose()
      group.shutdown()
    }
  }
}
