import BatonClient
import BatonTesting
import Testing

/// The proxy between a real client and real servers: each fault fires where the plan says, and
/// what it claims about processing is true (the ledger shows no call run twice).
@Suite("Fault proxy: real clients and servers", .timeLimit(.minutes(2)))
struct FaultProxyTests {
  @Test("with no plan the proxy changes nothing and injects nothing")
  func passThrough() async throws {
    let ledger = CallLedger()
    try await withTestServer(router: Service.router(ledger), faults: FaultPlan.none) { test in
      #expect(test.proxy != nil)
      try await withClient(endpoints: [test.endpoint]) { client in
        for index in 0..<20 {
          await ledger.call("u\(index)") { try await client.unary("test/Echo", [UInt8]("u\(index)")).text }
        }
        let echoed = try await client.bidirectional("test/Chat") { writer, replies in
          var got: [String] = []
          var iterator = replies.makeAsyncIterator()
          for word in ["b0", "x", "y"] {
            try await writer.write([UInt8](word))
            got.append(try await iterator.next()?.text ?? "")
          }
          writer.finish()
          return got
        }
        #expect(echoed == ["b0", "x", "y"])
      }
      #expect(test.proxy?.trace == [])
    }
    try ledger.verify()
    #expect(ledger.failures.isEmpty)
  }

  @Test("goaway last=3 after-opens=3: the 3rd call on member 0 moves to member 1; every call runs once")
  func goAwayAtThirdOpen() async throws {
    let ledger = CallLedger()
    let plan = try FaultPlan(parsing: "goaway last=3 after-opens=3")
    try await withTestCluster(count: 2, faults: [0: plan], router: { Service.router(ledger, member: "m\($0)") }) {
      cluster in
      // No keepalive: on a loaded machine a connection it suspects would skip its turn.
      try await withClient(endpoints: cluster.endpoints, configuration: .init(keepalive: nil)) { client in
        try await client.waitUntilReady()
        // One at a time, so the calls alternate between the members: member 0 sees streams
        // 1, 3, then 5, its 3rd OPEN.
        for index in 0..<8 {
          await ledger.call("c\(index)") { try await client.unary("test/Echo", [UInt8]("c\(index)")).text }
        }
        #expect(client.statistics.failed == 0)
        #expect(client.statistics.retried >= 1)
      }
      let trace = cluster[0].proxy.trace
      #expect(trace.first?.action == "goaway last=3 NO_ERROR")
      #expect(trace.first?.stream == 5)
      #expect(trace.first?.message == 0)
      #expect(trace.allSatisfy { $0.fault == 1 && $0.connection == 1 })
      #expect(cluster[1].proxy.trace.isEmpty)
    }
    try ledger.verify()
    #expect(ledger.failures.isEmpty)
    // The call member 0 was told it did not process ran on member 1, once.
    #expect(ledger.snapshot["c4"]?.processedBy == ["m1"])
  }

  @Test("reset code=refused at a call's OPEN: the client retries it transparently and it runs once")
  func refusedIsRetried() async throws {
    let ledger = CallLedger()
    try await withTestServer(
      router: Service.router(ledger), faults: try FaultPlan(parsing: "reset stream=3 code=refused")
    ) { test in
      try await withClient(endpoints: [test.endpoint]) { client in
        for index in 0..<3 {
          await ledger.call("r\(index)") { try await client.unary("test/Echo", [UInt8]("r\(index)")).text }
        }
        #expect(client.statistics.retried == 1)
      }
      let trace = test.proxy?.trace ?? []
      #expect(trace.map(\.action) == ["reset stream=3 REFUSED_STREAM"])
      #expect(trace.map(\.stream) == [3])
    }
    try ledger.verify()
    #expect(ledger.failures.isEmpty)
  }

  @Test("reset code=cancel at-message=2: the bidirectional call is cancelled at its 2nd message, on both sides")
  func cancelAtSecondMessage() async throws {
    let ledger = CallLedger()
    let handlerEnded = Event()
    var router = Service.router(ledger)
    router.bidirectional("test/Chat") { requests, writer, _ in
      defer { handlerEnded.fire() }
      for try await message in requests {
        if ledger.timesProcessed(message.text) == 0 { ledger.processed(message.text) }
      }
    }
    let plan = try FaultPlan(parsing: "reset stream=1 code=cancel at-message=2")
    try await withTestServer(router: router, faults: plan) { test in
      try await withClient(endpoints: [test.endpoint]) { client in
        let outcome = await ledger.call("bidi") {
          try await client.bidirectional("test/Chat") { writer, replies in
            try await writer.write([UInt8]("bidi"))
            try await writer.write([UInt8]("second"))
            for try await _ in replies {}
            return "ended"
          }
        }
        guard case .failed(let reason) = outcome else {
          Issue.record("the call was not cancelled: \(outcome)")
          return
        }
        #expect(reason.contains("cancelled"), "\(reason)")
      }
      await handlerEnded.wait()  // the server's handler was cancelled too, not left running
      #expect(test.proxy?.trace.map(\.message) == [2])
    }
    try ledger.verify()
  }

  @Test("a stalled server: a caller with a deadline fails with deadlineExceeded, keepalive frees one without")
  func stalledServer() async throws {
    let ledger = CallLedger()
    let plan = try FaultPlan(parsing: "stall 6s after-opens=1")
    try await withTestServer(router: Service.router(ledger), faults: plan) { test in
      try await withClient(endpoints: [test.endpoint]) { client in
        try await client.waitUntilReady()
        let impatient = await ledger.call("impatient") {
          try await client.unary("test/Echo", [UInt8]("impatient"), options: CallOptions(timeout: .milliseconds(300)))
            .text
        }
        guard case .failed(let reason) = impatient else {
          Issue.record("the call ignored its deadline: \(impatient)")
          return
        }
        #expect(reason.contains("deadline"), "\(reason)")
        // No deadline: keepalive leaves the silent connection (about 3 s) and the call fails as
        // may-have-been-processed; the next one goes over a new connection, which the stall
        // does not touch.
        let patient = await ledger.call("patient") { try await client.unary("test/Echo", [UInt8]("patient")).text }
        guard case .failed(let why) = patient else {
          Issue.record("a stalled connection answered: \(patient)")
          return
        }
        #expect(why.contains("keepalive") && why.contains("may have been processed"), "\(why)")
        await ledger.call("later") { try await client.unary("test/Echo", [UInt8]("later")).text }
      }
      #expect(test.proxy?.trace.map(\.action) == ["stall 6s"])
    }
    try ledger.verify()
    #expect(ledger.failures.keys.sorted() == ["impatient", "patient"])
  }

  @Test("cut mid-frame in a reply: the call fails as may-have-been-processed, ran once, and the client reconnects")
  func cutMidReply() async throws {
    let ledger = CallLedger()
    let plan = try FaultPlan(parsing: "cut mid-frame stream=1 at-message=1 from=server", seed: 5)
    try await withTestServer(router: Service.router(ledger), faults: plan) { test in
      try await withClient(endpoints: [test.endpoint]) { client in
        let cut = await ledger.call("cut") { try await client.unary("test/Echo", [UInt8]("cut")).text }
        guard case .failed(let reason) = cut else {
          Issue.record("the cut call succeeded")
          return
        }
        #expect(reason.hasPrefix("unavailable"), "\(reason)")
        await ledger.call("after") { try await client.unary("test/Echo", [UInt8]("after")).text }
      }
      let trace = test.proxy?.trace ?? []
      #expect(trace.count == 1)
      #expect(trace.first?.side == .server)
      #expect(trace.first?.action.hasPrefix("cut after ") == true)
      #expect(test.proxy?.connectionsAccepted == 2)
    }
    try ledger.verify()
    #expect(ledger.timesProcessed("cut") == 1)
    #expect(ledger.failures.keys.sorted() == ["cut"])
  }

  @Test("the same plan and seed against the same calls give the same trace, live")
  func sameSeedSameTraceLive() async throws {
    let text =
      "drip bytes=6 every=1ms frames=2 after-opens=1..4; delay 2ms frames=2 stream=5 at-message=1 from=server; "
      + "cut mid-frame stream=9 at-message=1 from=server"
    func run(seed: UInt64) async throws -> [Injection] {
      let ledger = CallLedger()
      let trace = try await withTestServer(
        router: Service.router(ledger), faults: try FaultPlan(parsing: text, seed: seed)
      ) { test in
        // No keepalive: a PING it sends on a slow machine would shift the frame counts.
        try await withClient(endpoints: [test.endpoint], configuration: Client.Configuration(keepalive: nil)) {
          client in
          for index in 0..<6 {
            await ledger.call("s\(index)") { try await client.unary("test/Echo", [UInt8]("s\(index)")).text }
          }
        }
        return test.proxy?.trace ?? []
      }
      try ledger.verify()
      #expect(ledger.failures.keys.sorted() == ["s4"], "stream 9 is the 5th call, whose reply is cut")
      return trace
    }
    let first = try await run(seed: 42)
    let second = try await run(seed: 42)
    #expect(first == second)
    #expect(Set(first.map(\.fault)) == [1, 2, 3])
  }
}
