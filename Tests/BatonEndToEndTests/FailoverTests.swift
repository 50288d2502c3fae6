import BatonClient
import BatonCore
import BatonPosix
import BatonServer
import BatonTesting
import Glibc
import Testing

@Suite("Failover: calls survive GOAWAY, restarts and lost servers", .timeLimit(.minutes(10)))
struct FailoverTests {
  @Test(
    "a call racing the GOAWAY is either processed once or retried elsewhere, never lost or run twice (1,000 rounds)")
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
                let reply = try await client.unary(
                  "test/Ledger", [UInt8](id), options: CallOptions(timeout: .seconds(60)))
                #expect(reply.text == id)
                index += 1
              }
            }
          }
          group.addTask {
            _ = await serverA.gracefulStop(deadline: .seconds(60))
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
      #expect(
        ledgerA.count(id) + ledgerB.count(id) == 1,
        "\(id) ran \(ledgerA.count(id)) times on A, \(ledgerB.count(id)) on B")
    }
    #expect(ledgerA.total + ledgerB.total == issued.total)
    // Both sides of the race happened: calls that A took before its GOAWAY, calls that moved to B.
    #expect(ledgerA.total > 0)
    #expect(ledgerB.total > 0)
    #expect(retried.current > 0, "no call was ever refused and retried: the race was not exercised")
    print(
      "goAwayRace: A processed \(ledgerA.total), B processed \(ledgerB.total), transparent retries \(retried.current)")
    serverB.stopNow()
    try await runB.value
  }

  @Test("a rolling restart of three servers under continuous load fails no call and runs none twice")
  func rollingRestart() async throws {
    let ledger = CallLedger()
    let router: @Sendable (Int) -> Router = { member in
      var router = echoRouter()
      router.unary("test/SlowLedger") { request, _ in
        ledger.processed(request.text, by: "m\(member)", reply: request.text)
        try await Task.sleep(for: .milliseconds(50))
        return request
      }
      return router
    }
    // Each member keeps its endpoint across its restart (BatonTesting's proxy holds the port).
    try await withTestCluster(count: 3, router: router) { cluster in
      let stop = Signal()
      try await withClient(endpoints: cluster.endpoints) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          for worker in 0..<16 {
            group.addTask {
              var index = 0
              while !stop.isFired {
                let id = "w\(worker)-\(index)"
                await ledger.call(id) {
                  try await client.unary("test/SlowLedger", [UInt8](id), options: CallOptions(timeout: .seconds(60)))
                    .text
                }
                index += 1
              }
            }
          }
          for worker in 0..<2 {
            group.addTask {
              var round = 0
              while !stop.isFired {
                try await client.bidirectional("echo/Bidi", options: CallOptions(timeout: .seconds(60))) {
                  writer, responses in
                  var iterator = responses.makeAsyncIterator()
                  for index in 0..<10 {
                    try await writer.write([UInt8]("s\(worker)-\(round)-\(index)"))
                    let echoed = try await iterator.next()?.text
                    #expect(echoed == "s\(worker)-\(round)-\(index)")
                  }
                  writer.finish()
                  let end = try await iterator.next()
                  #expect(end == nil)
                }
                round += 1
              }
            }
          }
          for member in cluster.members {
            try await Task.sleep(for: .milliseconds(300))  // load runs between restarts
            let report = await member.stopGracefully(deadline: .seconds(60))
            #expect(report.isClean)
            try await member.restart()
          }
          try await Task.sleep(for: .milliseconds(300))
          stop.fire()
          try await group.waitForAll()
        }
        #expect(client.statistics.failed == 0)
      }
    }
    // Every call succeeded with its own reply, and none ran twice.
    try ledger.verify()
    #expect(ledger.failures.isEmpty)
  }

  @Test("a call that waits for ready waits for an endpoint until its deadline instead of failing fast")
  func waitsForEndpoint() async throws {
    // The port stays reserved (bound, not listening: connects are refused) until the server takes
    // it. A port merely probed and released could be taken meanwhile by another test running in
    // parallel, or be an outgoing connection's ephemeral port, and the bind would fail.
    let reservation = try PortReservation()
    let port = reservation.port
    try await withClient(endpoints: [Endpoint(host: "127.0.0.1", port: port)]) { client in
      let reply = Task {
        try await client.unary(
          "echo/Unary", [UInt8]("late"), options: CallOptions(timeout: .seconds(60), waitForReady: true))
      }
      // The call is waiting for a connection; only now does the server appear.
      try await until("the call waits for a connection") { client.waitingCalls == 1 }
      reservation.release()
      let (server, run) = try await startServer(port: port, router: echoRouter())
      let got = try await reply.value.text
      #expect(got == "late")
      server.stopNow()
      try await run.value
    }
    // And with no server at all, the deadline (not a connect error) ends the call.
    let nobody = try PortReservation()
    try await withClient(endpoints: [Endpoint(host: "127.0.0.1", port: nobody.port)]) { client in
      let error = await #expect(throws: RPCError.self) {
        try await client.unary("echo/Unary", [], options: CallOptions(timeout: .milliseconds(300), waitForReady: true))
      }
      #expect(error?.code == .deadlineExceeded)
    }
    nobody.release()
  }

  @Test(
    "a call waiting for a connection ends when its task is cancelled, and without a deadline it gives up after maxWaitForConnection"
  )
  func waitingCallIsBounded() async throws {
    let waiting = CallOptions(waitForReady: true)
    let nobody = Endpoint(host: "127.0.0.1", port: try await freePort())
    var configuration = Client.Configuration()
    configuration.maxWaitForConnection = .milliseconds(300)
    try await withClient(endpoints: [nobody], configuration: configuration) { client in
      let started = ContinuousClock.now
      let error = await #expect(throws: RPCError.self) { try await client.unary("echo/Unary", [], options: waiting) }
      #expect(error?.code == .unavailable)
      #expect(error?.message.contains("no endpoint became ready") == true)
      #expect(ContinuousClock.now - started < .seconds(20), "not the 300 ms configured: the 30 s default?")
    }
    configuration.maxWaitForConnection = .seconds(60)
    try await withClient(endpoints: [nobody], configuration: configuration) { client in
      let call = Task { try await client.unary("echo/Unary", [], options: waiting) }
      try await until("the call waits for a connection") { client.waitingCalls == 1 }
      let started = ContinuousClock.now
      call.cancel()
      let result = await call.result
      #expect(ContinuousClock.now - started < .seconds(20), "the cancel did not end the 60 s wait")
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

extension FailoverTests {
  @Test("a client-streaming call refused at its 5th message is replayed, all five messages, on another member")
  func replayRefusedStreamingCall() async throws {
    // Member 0 answers the call's stream with REFUSED_STREAM once all five messages are out;
    // its proxy never let the stream reach the server, so the refusal is true and the client
    // replays the five messages on member 1.
    let plan = try FaultPlan(parsing: "reset stream=1 code=refused at-message=5")
    let ledger = CallLedger()
    let router: @Sendable (Int) -> Router = { member in
      var router = echoRouter()
      router.clientStreaming("echo/Collect") { requests, _ in
        var total: [UInt8] = []
        for try await message in requests { total += message }
        ledger.processed(total.text, by: "m\(member)", reply: total.text)
        return total
      }
      return router
    }
    try await withTestCluster(count: 2, faults: [0: plan], router: router) { cluster in
      try await withClient(endpoints: cluster.endpoints) { client in
        try await client.waitUntilReady()  // both ready: the first call goes to member 0
        await ledger.call("01234") {
          try await client.clientStreaming("echo/Collect") { writer in
            for index in 0..<5 { try await writer.write([UInt8]("\(index)")) }
          }.text
        }
        #expect(client.statistics.retried == 1)
      }
      #expect(cluster[0].proxy.trace.map(\.action) == ["reset stream=1 REFUSED_STREAM"])
      #expect(cluster[0].proxy.trace.map(\.message) == [5])
    }
    try ledger.verify()
    #expect(ledger.snapshot["01234"]?.processedBy == ["m1"])
  }
}

/// Starts a server on a given port, retrying the bind for a moment: while other tests run, an
/// outgoing connection may briefly hold the port number the old server just gave up.
func startServer(port: Int, router: Router) async throws -> (Server, Task<Void, any Error>) {
  var lastError: (any Error)?
  let limit = ContinuousClock.now + .seconds(30)
  while ContinuousClock.now < limit {
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

/// A local port held by a socket that is bound but does not listen: a connect to it is refused,
/// as if nothing were there, yet neither another test's server nor an outgoing connection's
/// ephemeral port can take it until ``release()``.
final class PortReservation: @unchecked Sendable {
  let port: Int
  private let fd = Locked<Int32>(-1)

  init() throws {
    let (socketFD, port) = try bindLoopback(listening: false)
    self.port = port
    fd.withLock { $0 = socketFD }
  }

  /// Gives the port up (for a server about to bind it). Idempotent.
  func release() {
    fd.withLock { fd in
      if fd >= 0 { close(fd) }
      fd = -1
    }
  }

  deinit { release() }
}

/// Waits (polling every few ms) until `condition` holds, for states that announce themselves
/// with no event to await. Throws (failing the test) if it does not hold within `timeout`.
func until(_ what: String, timeout: Duration = .seconds(30), _ condition: () -> Bool) async throws {
  struct NotReached: Error, CustomStringConvertible { var description: String }
  let limit = ContinuousClock.now + timeout
  while !condition() {
    guard ContinuousClock.now < limit else {
      throw NotReached(description: "timed out after \(timeout) waiting until \(what)")
    }
    try await Task.sleep(for: .milliseconds(5))
  }
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
