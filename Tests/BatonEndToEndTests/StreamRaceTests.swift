import BatonClient
import BatonCore
import BatonPosix
import BatonServer
import Testing

/// A client stream's writer racing the end of its call: from the server, or from the caller's
/// own body returning. Every writer must end with an error, never hang.
@Suite("Stream writers racing the call's end", .timeLimit(.minutes(10)))
struct StreamRaceTests {
  @Test("a writer racing the server's end of the call gets an error, never hangs (50 rounds)")
  func writerRacesServerEnd() async throws {
    var router = Router()
    // Ends the call with ABORTED after reading a number of messages the first one names.
    router.bidirectional("test/EndAfter") { requests, _, _ in
      var left = -1
      for try await message in requests {
        if left < 0 { left = Int(message.first ?? 1) }
        left -= 1
        if left <= 0 { throw RPCError(code: .aborted, message: "enough") }
      }
    }
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        for round in 0..<50 {
          let limit = UInt8(round % 40 + 1)
          let (writerError, readerError) = await streamUntilEnd(client, limit: limit)
          #expect(readerError?.code == .aborted, "round \(round): the reader saw \(String(describing: readerError))")
          // The writer may see the status itself or find the call already ended.
          #expect(
            writerError?.code == .aborted || writerError?.code == .cancelled,
            "round \(round): the writer saw \(String(describing: writerError))")
        }
      }
    }
  }

  /// Writes (the first message names `limit`) until writing fails, and reads until reading
  /// fails, at once; neither side is cancelled, so each must be ended by the call itself.
  private func streamUntilEnd(_ client: Client, limit: UInt8) async -> (RPCError?, RPCError?) {
    do {
      return try await client.bidirectional("test/EndAfter") { writer, replies in
        async let writerError: RPCError? = {
          var message = [UInt8](repeating: 0, count: 64)
          message[0] = limit
          do {
            while true { try await writer.write(message) }
          } catch {
            return error as? RPCError
          }
        }()
        var readerError: RPCError?
        do {
          for try await _ in replies {}
        } catch {
          readerError = error as? RPCError
        }
        return (await writerError, readerError)
      }
    } catch {
      return (nil, error as? RPCError)
    }
  }

  @Test("a writer left running, even parked for credit, when the call's body returns ends with cancelled (20 rounds)")
  func writerOutlivesBody() async throws {
    let size = 64 << 10
    var router = Router()
    // Never reads: the client's writes fill the stream window and the writer parks.
    router.bidirectional("test/Sink") { _, _, _ in
      try await Task.sleep(for: .seconds(60))
    }
    // The server grants four messages of credit per stream.
    var configuration = Server.Configuration(logger: .disabled)
    configuration.connection.initialWindowSize = UInt32(4 * size)
    try await withTestServer(router, configuration: configuration) { _, address in
      try await withClient(endpoints: [address]) { client in
        for round in 0..<20 {
          let wrote = Counter()
          let filled = Signal()
          let writing = try await client.bidirectional("test/Sink") { writer, _ in
            // Not structured on purpose: this writer outlives the body.
            let task = Task { () -> RPCError? in
              do {
                while true {
                  try await writer.write([UInt8](repeating: 1, count: size))
                  if wrote.increment() == 4 { filled.fire() }
                }
              } catch {
                return error as? RPCError
              }
            }
            // The window holds four messages: the fifth write waits for credit, or is about
            // to, as the body returns.
            await filled.wait()
            return task
          }
          // Bounded, so that a writer left parked fails the test instead of hanging the suite.
          guard let outcome = await Self.outcome(of: writing, within: .seconds(20)) else {
            Issue.record("round \(round): the writer still waits 20 s after its call ended")
            writing.cancel()
            return
          }
          #expect(
            outcome.error?.code == .cancelled, "round \(round): the writer saw \(String(describing: outcome.error))")
        }
      }
    }
  }

  @Test(
    "large messages (sent by reference) in flight through a graceful stop all arrive intact; a hard stop ends such a stream with an error"
  )
  func largeMessagesThroughStops() async throws {
    let messages = (0..<300).map { index in
      (0..<4_096).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index &* 13) }
    }
    // Graceful: half the messages go before the stop begins and half after; the stream still
    // finishes OK.
    try await withTestServer(echoRouter()) { server, address in
      try await withClient(endpoints: [address]) { client in
        let firstEcho = Signal()
        let stopBegan = Signal()
        async let echoed = client.bidirectional("echo/Bidi") { writer, replies in
          async let written: Void = {
            for message in messages[..<150] { try await writer.write(message) }
            await stopBegan.wait()
            for message in messages[150...] { try await writer.write(message) }
            writer.finish()
          }()
          var echoed: [[UInt8]] = []
          for try await reply in replies {
            echoed.append(reply)
            if echoed.count == 1 { firstEcho.fire() }
          }
          try await written
          return echoed
        }
        await firstEcho.wait()
        server.beginGracefulStop(deadline: .seconds(60))  // readiness is off when it returns
        let stopping = Task { await server.stopReport() }
        stopBegan.fire()
        let all = try await echoed
        let report = await stopping.value
        #expect(all.count == messages.count)
        #expect(all == messages, "an echo came back changed or out of order")
        #expect(report.isClean)
        #expect(report.drainedStreams == 1, "the stream did not span the stop: \(report)")
      }
    }
    // Hard: the connection goes with payloads still referenced for writing; the call fails.
    try await withTestServer(echoRouter()) { server, address in
      try await withClient(endpoints: [address]) { client in
        let firstEcho = Signal()
        async let outcome: (any Error)? = {
          do {
            try await client.bidirectional("echo/Bidi", options: CallOptions(timeout: .seconds(60))) {
              writer, replies in
              async let written: Void = { while true { try await writer.write(messages[0]) } }()
              for try await _ in replies { firstEcho.fire() }
              try await written
            }
            return nil
          } catch {
            return error
          }
        }()
        await firstEcho.wait()
        server.stopNow()
        let error = await outcome
        #expect(error is RPCError, "the stream ended with \(String(describing: error))")
      }
    }
  }

  /// The writer's outcome, or nil if it has none within `limit`. Not a task group: a writer
  /// that never ends must not hold the test, and the watcher left on it is then simply dropped.
  private static func outcome(of task: Task<RPCError?, Never>, within limit: Duration) async -> Outcome? {
    let result = Locked<CheckedContinuation<Outcome?, Never>?>(nil)
    return await withCheckedContinuation { continuation in
      result.withLock { $0 = continuation }
      let finish: @Sendable (Outcome?) -> Void = { outcome in
        result.withLock { $0.take() }?.resume(returning: outcome)
      }
      Task { finish(Outcome(error: await task.value)) }
      Task {
        try? await Task.sleep(for: limit)
        finish(nil)
      }
    }
  }

  struct Outcome: Sendable {
    let error: RPCError?
  }
}
