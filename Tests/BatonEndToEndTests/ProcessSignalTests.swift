import BatonClient
import BatonPosix
import Foundation
import Glibc
import Testing

/// Real `baton serve` processes stopped with real signals.
@Suite("Signals to real server processes", .serialized, .timeLimit(.minutes(10)))
struct ProcessSignalTests {
  @Test("16 unary callers and 4 bidi streams through a SIGTERM to one of two `baton serve` processes: 0 failures")
  func sigtermUnderLoad() async throws {
    // A deadline no in-flight call comes near, however slow the machine: the exit status says
    // whether every stream finished on its own.
    let a = try await BatonProcess(serve: ["--deadline", "30"])
    let b = try await BatonProcess(serve: ["--deadline", "30"])
    let endpoints = [Endpoint(host: "127.0.0.1", port: a.port), Endpoint(host: "127.0.0.1", port: b.port)]
    let stop = Signal()
    let calls = Counter()
    try await withClient(endpoints: endpoints) { client in
      try await client.waitUntilReady()
      try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in 0..<16 {
          group.addTask {
            var index = 0
            while !stop.isFired {
              let reply = try await client.unary(
                "demo.Echo/Unary", [UInt8]("u\(worker)-\(index)"), options: CallOptions(timeout: .seconds(60)))
              #expect(reply.text == "u\(worker)-\(index)")
              calls.increment()
              index += 1
            }
          }
        }
        for worker in 0..<4 {
          group.addTask {
            while !stop.isFired {
              try await client.bidirectional("demo.Echo/Bidi", options: CallOptions(timeout: .seconds(60))) {
                writer, responses in
                var iterator = responses.makeAsyncIterator()
                for index in 0..<20 {
                  try await writer.write([UInt8]("b\(worker)-\(index)"))
                  let echoed = try await iterator.next()
                  #expect(echoed?.text == "b\(worker)-\(index)")
                  try await Task.sleep(for: .milliseconds(5))
                }
                writer.finish()
                let end = try await iterator.next()
                #expect(end == nil)
              }
            }
          }
        }
        group.addTask {
          try await eventually("2,000 calls", within: .seconds(60)) { calls.current >= 2_000 }
          a.signal(SIGTERM)
          let status = await a.exitStatus(timeout: .seconds(60))
          #expect(status == 0, "a graceful stop with every stream finished exits 0")
          let before = calls.current
          try await eventually("2,000 more calls", within: .seconds(60)) { calls.current >= before + 2_000 }
          stop.fire()
        }
        try await group.waitForAll()
      }
      #expect(client.statistics.failed == 0)
    }
    b.signal(SIGTERM)
    #expect(await b.exitStatus(timeout: .seconds(60)) == 0)
  }

  @Test("a second signal stops at once: the open call is cut with unavailable and the exit status is 3")
  func secondSignal() async throws {
    let server = try await BatonProcess(serve: ["--deadline", "60", "--health-port", "0"])
    try await withClient(endpoints: [Endpoint(host: "127.0.0.1", port: server.port)]) { client in
      try await client.waitUntilReady()
      // Longer than the drain deadline: only the second signal can end it.
      let call = Task { try await client.unary("demo.Echo/Wait", [UInt8]("600000")) }
      try await eventually("the call is in its handler") { await server.drainz()?.openStreams == 1 }
      server.signal(SIGTERM)
      // The first signal's drain is under way (and the second cannot merge with the first).
      try await eventually("the server drains") { await server.drainz()?.phase == "draining" }
      let started = ContinuousClock.now
      server.signal(SIGTERM)
      let status = await server.exitStatus(timeout: .seconds(50))
      #expect(status == 3)
      // Far below the 60 s deadline, which a stop that ignored the second signal would wait for.
      #expect(ContinuousClock.now - started < .seconds(30))
      let result = await call.result
      guard case .failure(let error as RPCError) = result else {
        Issue.record("the call should have been cut, got \(result)")
        return
      }
      #expect(error.code == .unavailable)
    }
  }

  @Test("a server killed with SIGKILL mid-call: unavailable at once, saying it may have been processed, and no retry")
  func sigkill() async throws {
    let doomed = try await BatonProcess(serve: ["--health-port", "0"])
    let other = try await BatonProcess(serve: ["--health-port", "0"])
    let endpoints = [Endpoint(host: "127.0.0.1", port: doomed.port), Endpoint(host: "127.0.0.1", port: other.port)]
    try await withClient(endpoints: endpoints) { client in
      try await client.waitUntilReady()
      // Round robin: of two calls, one runs on each server. Each reports when it ended.
      let ended = Mutexed<[(ContinuousClock.Instant, Result<[UInt8], any Error>)]>([])
      let failed = Signal()
      // Each waits a minute, so the doomed one is still in its handler when the kill lands.
      let calls = (0..<2).map { _ in
        Task {
          do {
            let reply = try await client.unary("demo.Echo/Wait", [UInt8]("60000"))
            ended.mutate { $0.append((ContinuousClock.now, .success(reply))) }
          } catch {
            ended.mutate { $0.append((ContinuousClock.now, .failure(error))) }
            failed.fire()
          }
        }
      }
      defer { for call in calls { call.cancel() } }  // the other one has nothing left to show
      try await Self.bothInHandlers(doomed, other)
      let killedAt = ContinuousClock.now
      doomed.signal(SIGKILL)
      await failed.wait()  // returns once the lost call has failed
      let failures = ended.value.compactMap { entry -> (ContinuousClock.Instant, RPCError)? in
        if case .failure(let error as RPCError) = entry.1 { (entry.0, error) } else { nil }
      }
      let (when, error) = try #require(failures.first, "the call on the killed server must fail")
      // The call has no deadline: only the lost connection can end it, and at once (a bound for
      // a loaded machine, not a measurement).
      #expect(when - killedAt < .seconds(5), "the client noticed after \(when - killedAt)")
      #expect(error.code == .unavailable)
      #expect(error.message.contains("may have been processed"))
      #expect(client.statistics.retried == 0)
    }
    other.signal(SIGTERM)
    _ = await other.exitStatus(timeout: .seconds(10))
    _ = await doomed.exitStatus(timeout: .seconds(5))
  }

  @Test("an idempotent call lost with its killed server is retried on the other one and succeeds")
  func idempotentRetry() async throws {
    let doomed = try await BatonProcess(serve: ["--health-port", "0"])
    let other = try await BatonProcess(serve: ["--health-port", "0"])
    let endpoints = [Endpoint(host: "127.0.0.1", port: doomed.port), Endpoint(host: "127.0.0.1", port: other.port)]
    try await withClient(endpoints: endpoints) { client in
      try await client.waitUntilReady()
      let options = CallOptions(timeout: .seconds(60), idempotent: true)
      // Round robin: one of the two calls runs on the server about to die. Each waits 5 s, so the
      // doomed one is still in its handler when the kill lands right after both are seen there.
      let calls = (0..<2).map { _ in
        Task { try await client.unary("demo.Echo/Wait", [UInt8]("5000"), options: options) }
      }
      try await Self.bothInHandlers(doomed, other)
      doomed.signal(SIGKILL)
      for call in calls {
        let reply = try await call.value
        #expect(reply.text == "5000")
      }
      #expect(client.statistics.retried == 1)
      #expect(client.statistics.failed == 0)
    }
    other.signal(SIGTERM)
    _ = await other.exitStatus(timeout: .seconds(10))
    _ = await doomed.exitStatus(timeout: .seconds(5))
  }

  /// Waits until the two calls are in their handlers, one of them on `doomed` (seen through
  /// each server's `/drainz`).
  private static func bothInHandlers(_ doomed: BatonProcess, _ other: BatonProcess) async throws {
    try await eventually("both calls are in their handlers, one on the doomed server") {
      guard let onDoomed = await doomed.drainz()?.openStreams, let onOther = await other.drainz()?.openStreams else {
        return false
      }
      return onDoomed >= 1 && onDoomed + onOther == 2
    }
  }
}
