import BatonClient
import BatonCore
import Foundation
import Glibc
import Testing

@Suite("Silent failures: a frozen server, a connection that always dies")
struct SilentFailureTests {
  /// Two `baton serve` and a client (default configuration) over both, ready; then the first
  /// server is frozen (SIGSTOP) and `body` runs.
  private func withFrozenPair(_ body: (Client) async throws -> Void) async throws {
    let frozen = try await BatonProcess(serve: ["--health-port", "0"])
    let other = try await BatonProcess(serve: ["--health-port", "0"])
    let endpoints = [Endpoint(host: "127.0.0.1", port: frozen.port), Endpoint(host: "127.0.0.1", port: other.port)]
    defer {
      frozen.signal(SIGCONT)
      frozen.signal(SIGKILL)
      other.signal(SIGKILL)
    }
    try await withClient(endpoints: endpoints) { client in
      try await client.waitUntilReady()
      try await frozen.freeze()
      try await body(client)
    }
  }

  @Test(
    "a frozen server (SIGSTOP) is left within the keepalive bound: its call fails unavailable, the idempotent one moves, new calls go to the other"
  )
  func frozenServer() async throws {
    // The defaults: keepalive 1 s / 2 s, round-robin.
    try await withFrozenPair { client in
      let frozenAt = ContinuousClock.now
      // No deadline: only keepalive can end a call on the frozen server. Round-robin puts one of
      // each pair there.
      let outcomes = await concurrentOutcomes(2) { try await client.unary("demo.Echo/Unary", [UInt8]("plain")) }
      let noticed = ContinuousClock.now - frozenAt
      let failures = outcomes.compactMap { if case .failure(let error) = $0 { error } else { nil } }
      #expect(outcomes.count { (try? $0.get()) == [UInt8]("plain") } == 1, "the call on the live server succeeds")
      let failure = try #require(failures.first, "the call on the frozen server must fail, not hang")
      #expect(failure.code == .unavailable)
      #expect(failure.message.contains("keepalive"), "\(failure.message)")
      #expect(failure.message.contains("may have been processed"))
      // 1 s of silence, then 1 s for the PING: a bound for a loaded machine, not a measurement.
      #expect(noticed < .seconds(10), "noticed after \(noticed)")

      // New calls, idempotent or not, go to the live server while the frozen one stays frozen
      // (its reconnect waits in the handshake).
      for _ in 0..<20 {
        let reply = try await client.unary("demo.Echo/Unary", [UInt8]("next"), options: CallOptions(idempotent: true))
        #expect(reply.text == "next")
      }
    }
  }

  @Test("an idempotent call on a frozen server moves to the other within the keepalive bound and succeeds")
  func frozenIdempotent() async throws {
    try await withFrozenPair { client in
      let options = CallOptions(idempotent: true)
      let calls = (0..<2).map { _ in
        Task { try await client.unary("demo.Echo/Unary", [UInt8]("again"), options: options) }
      }
      for call in calls {
        let reply = try await call.value
        #expect(reply.text == "again")
      }
      #expect(client.statistics.retried == 1, "the call on the frozen server was retried once")
      #expect(client.statistics.failed == 0)
    }
  }

  @Test("the retry budget caps retries of idempotent calls against a server that always loses the connection")
  func retryBudget() async throws {
    let server = try RawServer()
    let opens = Mutexed(0)
    let stop = Signal()
    // Every connection: handshake, wait for the call's OPEN, then drop the connection.
    let dropper = Task {
      while !stop.isFired {
        guard let peer = await server.accept(timeoutSeconds: 1) else { continue }
        let (frames, _) = await peer.read { $0.openedStream != nil }
        if frames.contains(where: { $0.openedStream != nil }) { opens.mutate { $0 += 1 } }
        peer.shutdown()
      }
    }
    // No ratio, a floor of 0.5 per second over 10 s: five costly retries in all.
    let budget = Client.RetryBudget(ratio: 0, minimumPerSecond: 0.5, window: .seconds(10))
    try await withClient(endpoints: [server.endpoint], configuration: Client.Configuration(retryBudget: budget)) {
      client in
      for _ in 0..<4 {
        await #expect {
          _ = try await client.unary("echo/Unary", [], options: CallOptions(idempotent: true))
        } throws: { error in
          guard let error = error as? RPCError else { return false }
          return error.code == .unavailable && error.message.contains("retry budget is spent")
        }
      }
      #expect(client.statistics.retried == 5, "the budget's five retries, all taken by the first call")
      #expect(client.statistics.failed == 4)
    }
    stop.fire()
    await dropper.value
    #expect(opens.value == 4 + 5, "each call once, plus the five retries")
  }
}
