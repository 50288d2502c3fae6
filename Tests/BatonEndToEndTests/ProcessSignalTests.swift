import BatonPosix
import BatonClient
import Foundation
import Glibc
import Testing

/// Real `baton serve` processes stopped with real signals.
@Suite("Signals to real server processes", .serialized, .timeLimit(.minutes(2)))
struct ProcessSignalTests {
  @Test("16 unary callers and 4 bidi streams through a SIGTERM to one of two `baton serve` processes: 0 failures")
  func sigtermUnderLoad() async throws {
    let a = try await BatonProcess(serve: ["--deadline", "5"])
    let b = try await BatonProcess(serve: ["--deadline", "5"])
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
              let reply = try await client.unary("demo.Echo/Unary", [UInt8]("u\(worker)-\(index)"), options: CallOptions(timeout: .seconds(10)))
              #expect(reply.text == "u\(worker)-\(index)")
              calls.increment()
              index += 1
            }
          }
        }
        for worker in 0..<4 {
          group.addTask {
            while !stop.isFired {
              try await client.bidirectional("demo.Echo/Bidi", options: CallOptions(timeout: .seconds(10))) { writer, responses in
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
          while calls.current < 2_000 { try await Task.sleep(for: .milliseconds(20)) }
          a.signal(SIGTERM)
          let status = await a.exitStatus(timeout: .seconds(20))
          #expect(status == 0, "a graceful stop with every stream finished exits 0")
          let before = calls.current
          while calls.current < before + 2_000 { try await Task.sleep(for: .milliseconds(20)) }
          stop.fire()
        }
        try await group.waitForAll()
      }
      #expect(client.statistics.failed == 0)
    }
    b.signal(SIGTERM)
    #expect(await b.exitStatus(timeout: .seconds(20)) == 0)
  }

  @Test("a second signal stops at once: the open call is cut with unavailable and the exit status is 3")
  func secondSignal() async throws {
    let server = try await BatonProcess(serve: ["--deadline", "60"])
    try await withClient(endpoints: [Endpoint(host: "127.0.0.1", port: server.port)]) { client in
      try await client.waitUntilReady()
      let call = Task { try await client.unary("demo.Echo/Wait", [UInt8]("30000")) }
      try await Task.sleep(for: .milliseconds(200))  // let the call reach the handler
      server.signal(SIGTERM)
      try await Task.sleep(for: .milliseconds(200))  // the first signal's drain is under way
      let started = ContinuousClock.now
      server.signal(SIGTERM)
      let status = await server.exitStatus(timeout: .seconds(10))
      #expect(status == 3)
      #expect(ContinuousClock.now - started < .seconds(5))
      let result = await call.result
      guard case .failure(let error as RPCError) = result else {
        Issue.record("the call should have been cut, got \(result)")
        return
      }
      #expect(error.code == .unavailable)
    }
  }

  @Test("a server killed with SIGKILL mid-call: unavailable within a second, saying it may have been processed, and no retry")
  func sigkill() async throws {
    let doomed = try await BatonProcess(serve: [])
    let other = try await BatonProcess(serve: [])
    let endpoints = [Endpoint(host: "127.0.0.1", port: doomed.port), Endpoint(host: "127.0.0.1", port: other.port)]
    try await withClient(endpoints: endpoints) { client in
      try await client.waitUntilReady()
      // Round robin: of two calls, one runs on each server. Each reports when it ended.
      let ended = Mutexed<[(ContinuousClock.Instant, Result<[UInt8], any Error>)]>([])
      let failed = Signal()
      for _ in 0..<2 {
        Task {
          do {
            let reply = try await client.unary("demo.Echo/Wait", [UInt8]("5000"))
            ended.mutate { $0.append((ContinuousClock.now, .success(reply))) }
          } catch {
            ended.mutate { $0.append((ContinuousClock.now, .failure(error))) }
            failed.fire()
          }
        }
      }
      try await Task.sleep(for: .milliseconds(300))  // both calls are in their handlers by now
      let killedAt = ContinuousClock.now
      doomed.signal(SIGKILL)
      await failed.wait()  // returns once the lost call has failed
      let failures = ended.value.compactMap { entry -> (ContinuousClock.Instant, RPCError)? in
        if case .failure(let error as RPCError) = entry.1 { (entry.0, error) } else { nil }
      }
      let (when, error) = try #require(failures.first, "the call on the killed server must fail")
      #expect(when - killedAt < .seconds(1), "the client noticed after \(when - killedAt)")
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
    let doomed = try await BatonProcess(serve: [])
    let other = try await BatonProcess(serve: [])
    let endpoints = [Endpoint(host: "127.0.0.1", port: doomed.port), Endpoint(host: "127.0.0.1", port: other.port)]
    try await withClient(endpoints: endpoints) { client in
      try await client.waitUntilReady()
      let options = CallOptions(timeout: .seconds(10), idempotent: true)
      // Round robin: one of the two calls runs on the server about to die.
      let calls = (0..<2).map { _ in Task { try await client.unary("demo.Echo/Wait", [UInt8]("800"), options: options) } }
      try await Task.sleep(for: .milliseconds(200))  // both calls are in their handlers by now
      doomed.signal(SIGKILL)
      for call in calls {
        let reply = try await call.value
        #expect(reply.text == "800")
      }
      #expect(client.statistics.retried == 1)
      #expect(client.statistics.failed == 0)
    }
    other.signal(SIGTERM)
    _ = await other.exitStatus(timeout: .seconds(10))
    _ = await doomed.exitStatus(timeout: .seconds(5))
  }
}
