import BatonClient
import BatonCore
import BatonServer
import Testing

@Suite("Failover: calls survive GOAWAY, restarts and lost servers", .timeLimit(.minutes(5)))
struct FailoverTests {
  @Test("a call racing the GOAWAY is either processed once or retried elsewhere, never lost or run twice (1,000 rounds)")
  func goAwayRace() async throws {
    let ledgerA = Ledger()
    let ledgerB = Ledger()
    let retried = Counter()
    let issued = Ledger()
    let serverB = Server(configuration: .init(logger: .disabled), router: ledgerRouter(ledgerB))
    let runB = Task { try await serverB.run() }
    let addressB = try await serverB.listeningAddress
    for round in 0..<1_000 {
      // Even rounds: the normal two-phase GOAWAY. Odd rounds: no barrier, the final GOAWAY goes
      // out at once, so calls already in flight are refused and must be retried on B.
      var configuration = Server.Configuration(logger: .disabled)
      configuration.shutdown.goAwayBarrierCap = round.isMultiple(of: 2) ? .milliseconds(20) : .zero
      let serverA = Server(configuration: configuration, router: ledgerRouter(ledgerA))
      let runA = Task { try await serverA.run() }
      let addressA = try await serverA.listeningAddress
      try await withClient(endpoints: [addressA, addressB]) { client in
        try await client.waitUntilReady()
        let stopped = Signal()
        try await withThrowingTaskGroup(of: Void.self) { group in
          // Callers keep calling until A has stopped, so calls straddle both GOAWAYs.
          for caller in 0..<4 {
            group.addTask {
              var index = 0
              while !stopped.isFired {
                let id = "r\(round)-c\(caller)-\(index)"
                issued.record(id)
                let reply = try await client.unary("test/Ledger", [UInt8](id), options: CallOptions(timeout: .seconds(10)))
                #expect(reply.text == id)
                index += 1
              }
            }
          }
          group.addTask {
            _ = await serverA.gracefulStop(deadline: .seconds(5))
            stopped.fire()
          }
          try await group.waitForAll()
        }
        #expect(client.statistics.failed == 0)
        for _ in 0..<client.statistics.retried { retried.increment() }
      }
      try await runA.value
    }
    // Every id ran exactly once, on exactly one of the two servers.
    for id in issued.ids {
      #expect(ledgerA.count(id) + ledgerB.count(id) == 1, "\(id) ran \(ledgerA.count(id)) times on A, \(ledgerB.count(id)) on B")
    }
    #expect(ledgerA.total + ledgerB.total == issued.total)
    // Both sides of the race happened: calls that A took before its GOAWAY, calls that moved to B.
    #expect(ledgerA.total > 0)
    #expect(ledgerB.total > 0)
    #expect(retried.current > 0, "no call was ever refused and retried: the race was not exercised")
    print("goAwayRace: A processed \(ledgerA.total), B processed \(ledgerB.total), transparent retries \(retried.current)")
    serverB.stopNow()
    try await runB.value
  }

  @Test("a rolling restart of three servers under continuous load fails no call and runs none twice")
  func rollingRestart() async throws {
    let ledger = Ledger()
    var servers: [Server] = []
    var runs: [Task<Void, any Error>] = []
    var endpoints: [Endpoint] = []
    for _ in 0..<3 {
      let server = Server(configuration: .init(logger: .disabled), router: ledgerRouter(ledger))
      runs.append(Task { try await server.run() })
      endpoints.append(try await server.listeningAddress)
      servers.append(server)
    }
    let stop = Signal()
    let issued = Counter()
    try await withClient(endpoints: endpoints) { client in
      try await withThrowingTaskGroup(of: Void.self) { group in
        for worker in 0..<16 {
          group.addTask {
            var index = 0
            while !stop.isFired {
              let id = "w\(worker)-\(index)"
              issued.increment()
              let got62 = try await client.unary("test/SlowLedger", [UInt8](id), options: CallOptions(timeout: .seconds(20))).text
              #expect(got62 == id)
              index += 1
            }
          }
        }
        for worker in 0..<2 {
          group.addTask {
            var round = 0
            while !stop.isFired {
              try await client.bidirectional("echo/Bidi", options: CallOptions(timeout: .seconds(20))) { writer, responses in
                var iterator = responses.makeAsyncIterator()
                for index in 0..<10 {
                  try await writer.write([UInt8]("s\(worker)-\(round)-\(index)"))
                  let got75 = try await iterator.next()?.text
                  #expect(got75 == "s\(worker)-\(round)-\(index)")
                }
                writer.finish()
                let got78 = try await iterator.next()
                #expect(got78 == nil)
              }
              round += 1
            }
          }
        }
        for index in 0..<3 {
          try await Task.sleep(for: .milliseconds(300))  // load runs between restarts
          let report = await servers[index].gracefulStop(deadline: .seconds(10))
          #expect(report.isClean)
          try await runs[index].value
          let (replacement, run) = try await startServer(port: endpoints[index].port, router: ledgerRouter(ledger))
          runs[index] = run
          servers[index] = replacement
        }
        try await Task.sleep(for: .milliseconds(300))
        stop.fire()
        try await group.waitForAll()
      }
      #expect(client.statistics.failed == 0)
      #expect(ledger.duplicates.isEmpty, "processed twice: \(ledger.duplicates.prefix(5))")
      #expect(ledger.total == issued.current)
    }
    for server in servers { server.stopNow() }
    for run in runs { try await run.value }
  }

  @Test("when no endpoint is ready, a call waits for one until its deadline instead of failing fast")
  func waitsForEndpoint() async throws {
    // Reserve a port, then start the server on it only after the call has begun.
    let probe = Server(configuration: .init(logger: .disabled), router: echoRouter())
    let probeRun = Task { try await probe.run() }
    let port = try await probe.listeningAddress.port
    probe.stopNow()
    try await probeRun.value
    var configuration = Server.Configuration(logger: .disabled)
    configuration.port = port
    try await withClient(endpoints: [Endpoint(host: "127.0.0.1", port: port)]) { client in
      let reply = Task { try await client.unary("echo/Unary", [UInt8]("late"), options: CallOptions(timeout: .seconds(10))) }
      try await Task.sleep(for: .milliseconds(200))  // the call is waiting; now the server appears
      try await withTestServer(echoRouter(), configuration: configuration) { _, _ in
        let got122 = try await reply.value.text
        #expect(got122 == "late")
      }
    }
    // And with no server at all, the deadline (not a connect error) ends the call.
    try await withClient(endpoints: [Endpoint(host: "127.0.0.1", port: port)]) { client in
      let error = await #expect(throws: RPCError.self) {
        try await client.unary("echo/Unary", [], options: CallOptions(timeout: .milliseconds(300)))
      }
      #expect(error?.code == .deadlineExceeded)
    }
  }

  @Test("a call waiting for a connection ends when its task is cancelled, and without a deadline it gives up after maxWaitForConnection")
  func waitingCallIsBounded() async throws {
    let nobody = Endpoint(host: "127.0.0.1", port: try await freePort())
    var configuration = Client.Configuration()
    configuration.maxWaitForConnection = .milliseconds(300)
    try await withClient(endpoints: [nobody], configuration: configuration) { client in
      let started = ContinuousClock.now
      let error = await #expect(throws: RPCError.self) { try await client.unary("echo/Unary", []) }
      #expect(error?.code == .unavailable)
      #expect(error?.message.contains("no endpoint became ready") == true)
      #expect(ContinuousClock.now - started < .seconds(5))
    }
    configuration.maxWaitForConnection = .seconds(60)
    try await withClient(endpoints: [nobody], configuration: configuration) { client in
      let call = Task { try await client.unary("echo/Unary", []) }
      try await Task.sleep(for: .milliseconds(100))  // let it park, waiting for a connection
      let started = ContinuousClock.now
      call.cancel()
      let result = await call.result
      #expect(ContinuousClock.now - started < .seconds(2))
      guard case .failure(let error as RPCError) = result else {
        Issue.record("a cancelled call must fail, got \(result)")
        return
      }
      #expect(error.code == .cancelled)
    }
  }

  @Test("waitUntilReady's timeout ends the wait even when its timer runs before the caller parks")
  func waitUntilReadyTimesOut() async throws {
    let nobody = Endpoint(host: "127.0.0.1", port: try await freePort())
    try await withClient(endpoints: [nobody]) { client in
      // A zero timeout's timer is due at once: the loop often runs it before the caller parks.
      for _ in 0..<200 {
        let error = await #expect(throws: RPCError.self) { try await client.waitUntilReady(timeout: .zero) }
        #expect(error?.code == .deadlineExceeded)
      }
    }
  }

  @Test("a client-streaming call the server did not process is replayed on another endpoint")
  func replayStreamingCall() async throws {
    let gate = Signal()
    var routerA = echoRouter()
    routerA.clientStreaming("echo/Collect") { _, _ in
      throw RPCError(code: .internal, message: "A must never process this")
    }
    // A refuses every stream: MAX_CONCURRENT_STREAMS 0 means "not processed" for all of them.
    var configurationA = Server.Configuration(logger: .disabled)
    configurationA.connection.maxConcurrentStreams = 0
    try await withTestServer(routerA, configuration: configurationA) { _, addressA in
      try await withTestServer(echoRouter()) { _, addressB in
        try await withClient(endpoints: [addressA, addressB]) { client in
          for _ in 0..<10 {
            let reply = try await client.clientStreaming("echo/Collect") { writer in
              for index in 0..<5 { try await writer.write([UInt8]("\(index)")) }
            }
            #expect(reply.text == "01234")
          }
          gate.fire()
          #expect(client.statistics.failed == 0)
        }
      }
    }
    #expect(gate.isFired)
  }
}

/// Starts a server on a given port, retrying the bind for a moment: while other tests run, an
/// outgoing connection may briefly hold the port number the old server just gave up.
func startServer(port: Int, router: Router) async throws -> (Server, Task<Void, any Error>) {
  var lastError: (any Error)?
  for _ in 0..<100 {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.port = port
    let server = Server(configuration: configuration, router: router)
    let run = Task { try await server.run() }
    do {
      _ = try await server.listeningAddress
      return (server, run)
    } catch {
      lastError = error
      _ = try? await run.value
      try await Task.sleep(for: .milliseconds(20))
    }
  }
  throw lastError ?? RPCError(code: .unavailable, message: "could not bind port \(port)")
}

/// A port nothing listens on (bound once, then released).
func freePort() async throws -> Int {
  let probe = Server(configuration: .init(logger: .disabled), router: Router())
  let run = Task { try await probe.run() }
  let port = try await probe.listeningAddress.port
  probe.stopNow()
  try await run.value
  return port
}
