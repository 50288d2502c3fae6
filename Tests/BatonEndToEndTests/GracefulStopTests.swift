import BatonClient
import BatonCore
import BatonPosix
import BatonServer
import BatonTesting
import Testing

func ledgerRouter(_ ledger: Ledger, name: String = "") -> Router {
  var router = echoRouter()
  router.unary("test/Ledger") { request, _ in
    ledger.record(request.text)
    return request
  }
  router.unary("test/SlowLedger") { request, _ in
    ledger.record(request.text)
    try await Task.sleep(for: .milliseconds(50))
    return request
  }
  return router
}

@Suite("Graceful stop: a deploy never fails a call", .timeLimit(.minutes(10)))
struct GracefulStopTests {
  @Test(
    "a handler that stops its own server (an admin endpoint) answers, and the server stops: 10 rounds, graceful and hard"
  )
  func handlerStopsItsOwnServer() async throws {
    // The handler starts in place on the loop, inside the read that carried its call: the stop
    // it begins there must neither re-enter that read nor lose the reply.
    for round in 0..<10 {
      let hard = round % 2 == 1
      let holder = Locked<Server?>(nil)
      var router = echoRouter()
      router.unary("admin/Stop") { request, _ in
        let server = holder.withLock { $0 }
        if hard { server?.stopNow() } else { server?.beginGracefulStop() }
        return request
      }
      let server = Server(configuration: .init(logger: .disabled), router: router)
      holder.withLock { $0 = server }
      let running = Task { try await server.run() }
      let address = try await server.listeningAddress
      try await withClient(endpoints: [address]) { client in
        do {
          let reply = try await client.unary(
            "admin/Stop", Array("bye".utf8), options: CallOptions(timeout: .seconds(30)))
          #expect(reply == Array("bye".utf8), "round \(round)")
        } catch let error as RPCError {
          // A hard stop cuts open streams: the reply may lose that race, but only with unavailable.
          #expect(hard && error.code == .unavailable, "round \(round): \(error)")
        }
      }
      try await running.value
      #expect(server.phase == .stopped, "round \(round)")
    }
  }

  @Test("in-flight unary calls and a bidi stream finish OK on a stopping server while new calls go elsewhere")
  func inFlightFinishNewGoElsewhere() async throws {
    let ledger = CallLedger()
    // The 8 held calls, the bidi stream and the test: all calls are in their handlers before the
    // stop begins, and none ends before `release` (once the stop is under way), however slow
    // the machine: a handler that merely took a while could end before the stop began.
    let inFlight = Barrier(count: 10)
    let release = Signal()
    let router: @Sendable (Int) -> Router = { member in
      var router = echoRouter()
      router.unary("test/Ledger") { request, _ in
        ledger.processed(request.text, by: "m\(member)", reply: request.text)
        return request
      }
      router.unary("test/Held") { request, _ in
        ledger.processed(request.text, by: "m\(member)", reply: request.text)
        await inFlight.arrive()
        await release.wait()
        return request
      }
      return router
    }
    try await withTestCluster(count: 2, router: router) { cluster in
      try await withClient(endpoints: [cluster[0].endpoint]) { clientA in
        try await withClient(endpoints: cluster.endpoints) { both in
          try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<8 {
              group.addTask {
                await ledger.call("held-\(index)") {
                  try await clientA.unary("test/Held", [UInt8]("held-\(index)")).text
                }
              }
            }
            // A bidi stream that keeps talking through the stop.
            group.addTask {
              try await clientA.bidirectional("echo/Bidi") { writer, responses in
                var iterator = responses.makeAsyncIterator()
                for index in 0..<30 {
                  try await writer.write([UInt8]("b\(index)"))
                  let echoed = try await iterator.next()?.text
                  #expect(echoed == "b\(index)")
                  if index == 5 {
                    await inFlight.arrive()
                    await release.wait()  // the rest is said while the server stops
                  }
                  try await Task.sleep(for: .milliseconds(10))
                }
                writer.finish()
              }
            }
            await inFlight.arrive()
            defer { release.fire() }  // also when a call below throws: no handler is left held
            cluster[0].beginGracefulStop(deadline: .seconds(60))  // readiness is off when it returns
            let stopping = Task { await cluster[0].stopGracefully(deadline: .seconds(60)) }
            // New calls through the two-endpoint client all land on member 1.
            for index in 0..<20 {
              await ledger.call("new-\(index)") { try await both.unary("test/Ledger", [UInt8]("new-\(index)")).text }
            }
            release.fire()
            try await group.waitForAll()
            let report = await stopping.value
            #expect(report.isClean)
            #expect(report.drainedStreams >= 9)
          }
          #expect(clientA.statistics.failed == 0)
          #expect(both.statistics.failed == 0)
        }
      }
    }
    try ledger.verify()
    #expect(ledger.failures.isEmpty)
    #expect((0..<8).allSatisfy { ledger.snapshot["held-\($0)"]?.processedBy == ["m0"] })
  }

  @Test(
    "readiness turns off before the first GOAWAY leaves, and a client that never answers the PING still gets the final GOAWAY"
  )
  func readinessAndBoundedBarrier() async throws {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.shutdown.goAwayBarrierCap = .milliseconds(300)
    let server = Server(configuration: configuration, router: echoRouter())
    let run = Task { try await server.run() }
    let address = try await server.listeningAddress
    let peer = try RawPeer(port: address.port, receiveTimeoutSeconds: 60)
    peer.handshake()
    peer.send(
      .open(streamID: 1, RequestHead(method: "echo/Unary"), endStream: false),
      .data(streamID: 1, payload: [1], endMessage: true, endStream: true))
    _ = await peer.read { $0.isTrailers }
    #expect(server.isReady)
    // A deadline far beyond the bound below: a barrier waiting for the deadline would show.
    server.beginGracefulStop(deadline: .seconds(60))
    #expect(!server.isReady)  // flipped synchronously, before any GOAWAY can be written
    let started = ContinuousClock.now
    let (first, _) = await peer.read { $0.isGoAway }
    #expect(first.last?.goAwayLastStreamID == StreamID.max)
    // The peer never answers the barrier PING.
    let (rest, closed) = await peer.read()
    let elapsed = ContinuousClock.now - started
    let final = rest.first { $0.isGoAway }
    #expect(final?.goAwayLastStreamID == 1)
    #expect(rest.contains { if case .ping(false, _) = $0 { true } else { false } })
    #expect(closed)
    #expect(elapsed < .seconds(30), "the final GOAWAY waited \(elapsed)")
    try await run.value
  }

  @Test("a stream opened above the final GOAWAY's last id is refused, never run")
  func refusedAboveLastID() async throws {
    let ledger = Ledger()
    let release = Signal()
    var router = ledgerRouter(ledger)
    router.unary("test/Held") { request, _ in
      await release.wait()
      return request
    }
    let server = Server(configuration: .init(logger: .disabled), router: router)
    let run = Task { try await server.run() }
    let address = try await server.listeningAddress
    let peer = try RawPeer(port: address.port)
    peer.handshake()
    // Stream 1 is held open by its handler until stream 3 has been refused: it keeps the
    // connection open through the drain however long the steps below take.
    peer.send(
      .open(streamID: 1, RequestHead(method: "test/Held"), endStream: false),
      .data(streamID: 1, payload: [UInt8]("one"), endMessage: true, endStream: true))
    // A PING round trip proves the server has taken stream 1 (frames are handled in order).
    peer.send(.ping(ack: false, payload: 77))
    _ = await peer.read { $0.isPingAck(77) }
    server.beginGracefulStop(deadline: .seconds(60))
    _ = await peer.read { $0.isGoAway }
    // Answer the barrier PING as a real client would, then wait for the final GOAWAY.
    let (frames, _) = await peer.read { $0.isPing }
    if case .ping(false, let payload)? = frames.last { peer.send(.ping(ack: true, payload: payload)) }
    let (finalFrames, _) = await peer.read { $0.isGoAway }
    #expect(finalFrames.last?.goAwayLastStreamID == 1)
    peer.send(
      .open(streamID: 3, RequestHead(method: "test/Ledger"), endStream: false),
      .data(streamID: 3, payload: [UInt8]("three"), endMessage: true, endStream: true))
    let (after, _) = await peer.read { $0.resetCode(stream: 3) != nil }
    #expect(after.last?.resetCode(stream: 3) == .refusedStream)
    release.fire()
    // Stream 1 still finishes normally.
    let (end, _) = await peer.read { $0.isTrailers }
    if case .trailers(1, let trailers)? = end.last {
      #expect(trailers.status == 0)
    } else {
      Issue.record("stream 1 did not finish: \(end)")
    }
    #expect(ledger.count("three") == 0)
    try await run.value
  }

  @Test(
    "the deadline cuts a handler that ignores the drain: unavailable with the reason, named in the report, hooks still run"
  )
  func deadlineCuts() async throws {
    let started = Signal()
    let hookRan = Signal()
    var router = Router()
    router.unary("test/Stubborn") { _, _ in
      started.fire()
      while true { try await Task.sleep(for: .seconds(60)) }
    }
    let server = Server(configuration: .init(logger: .disabled), router: router)
    server.addShutdownHook("flush-metrics") { hookRan.fire() }
    let run = Task { try await server.run() }
    let address = try await server.listeningAddress
    try await withClient(endpoints: [address]) { client in
      let call = Task { try await client.unary("test/Stubborn", []) }
      await started.wait()
      let report = await server.gracefulStop(deadline: .milliseconds(300))
      let result = await call.result
      guard case .failure(let error as RPCError) = result else {
        Issue.record("the cut call should fail, got \(result)")
        return
      }
      #expect(error.code == .unavailable)
      #expect(error.message.contains("drain deadline"))
      #expect(report.cutStreams.map(\.method) == ["test/Stubborn"])
      #expect(report.drainedStreams == 0, "a cut call did not drain")
      #expect(report.cutStreams.first.map { $0.age >= .milliseconds(250) } == true)
      #expect(!report.isClean)
      #expect(report.hooks.map(\.name) == ["flush-metrics"])
      #expect(hookRan.isFired)
    }
    try await run.value
  }

  @Test("a handler that watches the drain signal ends early and cleanly")
  func handlerWatchesDrain() async throws {
    let started = Signal()
    var router = Router()
    router.serverStreaming("test/Ticker") { _, writer, context in
      started.fire()
      var sent = 0
      while !context.isDraining {
        try await writer.write([UInt8]("tick"))
        sent += 1
        try await Task.sleep(for: .milliseconds(5))
      }
      try await writer.write([UInt8]("bye"))
    }
    let server = Server(configuration: .init(logger: .disabled), router: router)
    let run = Task { try await server.run() }
    let address = try await server.listeningAddress
    try await withClient(endpoints: [address]) { client in
      async let messages = client.serverStreaming("test/Ticker", []) { responses in
        var all: [String] = []
        for try await message in responses { all.append(message.text) }
        return all
      }
      await started.wait()
      let report = await server.gracefulStop(deadline: .seconds(20))
      let all = try await messages
      #expect(all.last == "bye")
      #expect(report.isClean)
      #expect(report.total < .seconds(10))
    }
    try await run.value
  }

  @Test("a running client stream sees its connection draining, and can end and move early")
  func clientSeesDrain() async throws {
    let opened = Signal()
    var router = echoRouter()
    router.bidirectional("test/Long") { requests, writer, _ in
      opened.fire()
      for try await message in requests { try await writer.write(message) }
    }
    let server = Server(configuration: .init(logger: .disabled), router: router)
    let run = Task { try await server.run() }
    let address = try await server.listeningAddress
    try await withClient(endpoints: [address]) { client in
      try await client.bidirectional("test/Long", options: CallOptions(timeout: .seconds(60))) { writer, responses in
        await opened.wait()
        #expect(!responses.isConnectionDraining)
        server.beginGracefulStop(deadline: .seconds(60))
        // The GOAWAY travels asynchronously; poll the flag, bounded, as an application would.
        let limit = ContinuousClock.now + .seconds(30)
        while !responses.isConnectionDraining && ContinuousClock.now < limit {
          try await Task.sleep(for: .milliseconds(5))
        }
        #expect(responses.isConnectionDraining)
        #expect(writer.isConnectionDraining)
        writer.finish()  // end early and cleanly: the drain need not wait for the deadline
        for try await _ in responses {}
      }
    }
    let report = await server.stopReport()
    #expect(report.isClean)
    #expect(report.total < .seconds(40), "the drain waited for the deadline")
    try await run.value
  }

  @Test("hooks and workers stop in reverse order of registration; a hung hook is timed out")
  func hooksInReverse() async throws {
    let order = Mutexed<[String]>([])
    let server = Server(configuration: .init(logger: .disabled), router: echoRouter())
    server.addShutdownHook("database") { order.mutate { $0.append("database") } }
    server.addBackgroundWorker("consumer") {
      do {
        while true { try await Task.sleep(for: .seconds(60)) }
      } catch {
        order.mutate { $0.append("consumer") }
      }
    }
    server.addShutdownHook("hung", timeout: .milliseconds(200)) {
      order.mutate { $0.append("hung") }
      while true { try? await Task.sleep(for: .seconds(60)) }
    }
    server.addShutdownHook("cache") { order.mutate { $0.append("cache") } }
    let run = Task { try await server.run() }
    _ = try await server.listeningAddress
    let report = await server.gracefulStop(deadline: .seconds(1))
    try await run.value
    #expect(report.hooks.map(\.name) == ["cache", "hung", "consumer", "database"])
    #expect(report.hooks[1].outcome == .timedOut)
    #expect(report.hooks[0].outcome == .finished)
    #expect(order.value == ["cache", "hung", "consumer", "database"])
  }

  @Test("a hard stop after a graceful one cuts at once and does not deadlock")
  func hardAfterGraceful() async throws {
    let started = Signal()
    var router = Router()
    router.unary("test/Stubborn") { _, _ in
      started.fire()
      while true { try await Task.sleep(for: .seconds(60)) }
    }
    let server = Server(configuration: .init(logger: .disabled), router: router)
    let run = Task { try await server.run() }
    let address = try await server.listeningAddress
    try await withClient(endpoints: [address]) { client in
      let call = Task { try await client.unary("test/Stubborn", []) }
      await started.wait()
      server.beginGracefulStop(deadline: .seconds(60))
      server.stopNow()
      let began = ContinuousClock.now
      let report = await server.stopReport()
      #expect(ContinuousClock.now - began < .seconds(20), "not cut at once: waited for the graceful deadline")
      #expect(report.cutStreams.count == 1)
      if case .failure(let error as RPCError) = await call.result {
        #expect(error.code == .unavailable)
      } else {
        Issue.record("the call should have been cut")
      }
    }
    try await run.value
  }

  @Test("cancelling the task that runs the server is a hard stop, and run() returns")
  func cancelRun() async throws {
    let server = Server(configuration: .init(logger: .disabled), router: echoRouter())
    let run = Task { try await server.run() }
    _ = try await server.listeningAddress
    run.cancel()
    try await run.value
    #expect(server.phase == .stopped)
  }

  @Test("cancelling run() during a graceful drain (which runs in run()'s task) cuts it short, and run() returns")
  func cancelRunDuringDrain() async throws {
    let (started, handlerStarted) = AsyncStream.makeStream(of: Void.self)
    var router = Router()
    router.unary("slow/Hold") { _, _ in
      handlerStarted.yield()
      try await Task.sleep(for: .seconds(600))
      return []
    }
    let server = Server(configuration: .init(logger: .disabled), router: router)
    let run = Task { try await server.run() }
    let address = try await server.listeningAddress
    try await withClient(endpoints: [address]) { client in
      let call = Task { try await client.unary("slow/Hold", []) }
      var iterator = started.makeAsyncIterator()
      _ = await iterator.next()
      server.beginGracefulStop(deadline: .seconds(600))
      run.cancel()
      try await run.value
      let report = await server.stopReport()
      #expect(report.cutCause == .stoppedAtOnce)
      #expect(report.cutStreams.map(\.method) == ["slow/Hold"])
      let error = await #expect(throws: RPCError.self) { try await call.value }
      #expect(error?.code == .unavailable)
    }
    #expect(server.phase == .stopped)
  }
}

/// A value behind a lock, for tests that collect from several tasks.
final class Mutexed<Value: Sendable>: Sendable {
  private let storage: Locked<Value>
  init(_ value: Value) { storage = Locked(value) }
  func mutate(_ body: (inout Value) -> Void) { storage.withLock { body(&$0) } }
  var value: Value { storage.withLock { $0 } }
}
