import BatonClient
import BatonCore
import BatonServer
import Synchronization
import Testing

/// A client stream's writer racing the end of its call: from the server, or from the caller's
/// own body returning. Every writer must end with an error, never hang.
@Suite("Stream writers racing the call's end", .timeLimit(.minutes(2)))
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
          guard let outcome = await Self.outcome(of: writing, within: .seconds(5)) else {
            Issue.record("round \(round): the writer still waits 5 s after its call ended")
            writing.cancel()
            return
          }
          #expect(outcome.error?.code == .cancelled, "round \(round): the writer saw \(String(describing: outcome.error))")
        }
      }
    }
  }

  /// The writer's outcome, or nil if it has none within `limit`. Not a task group: a writer
  /// that never ends must not hold the test, and the watcher left on it is then simply dropped.
  private static func outcome(of task: Task<RPCError?, Never>, within limit: Duration) async -> Outcome? {
    let result = Mutex<CheckedContinuation<Outcome?, Never>?>(nil)
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
