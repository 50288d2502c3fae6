import BatonClient
import BatonTesting
import Testing

/// Test clusters: members stopped, killed, frozen and restarted under a real client, and the
/// GOAWAY-in-a-stream scenario the README shows.
@Suite("Test clusters and the call ledger", .timeLimit(.minutes(2)))
struct ClusterTests {
  @Test("a bidirectional call survives a GOAWAY at its 3rd message: replayed on member 1, processed once")
  func bidiGoAwayAtThirdMessage() async throws {
    let ledger = CallLedger()
    // Member 0 announces it processed nothing above stream 0, once the call on stream 1 has
    // sent its 3rd message; the proxy made sure member 0 never saw that stream.
    let plan = try FaultPlan(parsing: "goaway last=0 stream=1 at-message=3")
    try await withTestCluster(count: 2, faults: [0: plan], router: { Service.router(ledger, member: "m\($0)") }) {
      cluster in
      try await withClient(endpoints: cluster.endpoints) { client in
        try await client.waitUntilReady()  // both connected: the first call goes to member 0
        let outcome = await ledger.call("chat-1") {
          try await client.bidirectional("test/Chat") { writer, replies in
            var replies = replies.makeAsyncIterator()
            var echoed: [String] = []
            // Three messages before reading: the client holds them, and replays them.
            for message in ["chat-1", "two", "three"] { try await writer.write([UInt8](message)) }
            for _ in 0..<3 { echoed.append(try await replies.next()?.text ?? "-") }
            for message in ["four", "five"] {
              try await writer.write([UInt8](message))
              echoed.append(try await replies.next()?.text ?? "-")
            }
            writer.finish()
            return echoed.joined(separator: " ")
          }
        }
        #expect(outcome == .succeeded(reply: "chat-1 two three four five"))
        #expect(client.statistics.retried == 1)
      }
      #expect(cluster[0].proxy.trace.map(\.action) == ["goaway last=0 NO_ERROR"])
      #expect(cluster[0].proxy.trace.map(\.message) == [3])
    }
    try ledger.verify()
    #expect(ledger.snapshot["chat-1"]?.processedBy == ["m1"])
  }

  @Test("a GOAWAY at a stream's 3rd message naming that stream: the stream finishes where it is, later calls run once")
  func bidiGoAwayKeepsStream() async throws {
    let ledger = CallLedger()
    let plan = try FaultPlan(parsing: "goaway stream=1 at-message=3")
    try await withTestCluster(count: 2, faults: [0: plan], router: { Service.router(ledger, member: "m\($0)") }) {
      cluster in
      try await withClient(endpoints: cluster.endpoints) { client in
        try await client.waitUntilReady()
        await ledger.call("long") {
          try await client.bidirectional("test/Chat") { writer, replies in
            var replies = replies.makeAsyncIterator()
            var echoed: [String] = []
            for message in ["long", "b", "c", "d", "e"] {
              try await writer.write([UInt8](message))
              echoed.append(try await replies.next()?.text ?? "-")
            }
            writer.finish()
            return echoed.joined(separator: " ")
          }
        }
        for index in 0..<4 {
          await ledger.call("after\(index)") { try await client.unary("test/Echo", [UInt8]("after\(index)")).text }
        }
      }
      #expect(cluster[0].proxy.trace.map(\.action) == ["goaway last=1 NO_ERROR"])
    }
    try ledger.verify()
    #expect(ledger.failures.isEmpty)
    #expect(ledger.snapshot["long"]?.processedBy == ["m0"])
    // (Later calls go to member 1 or to a new connection to member 0: a GOAWAY ends a
    // connection, not a server.)
  }

  @Test("a killed member's endpoint refuses; calls go to the other; restarted on the same endpoint it serves again")
  func killAndRestart() async throws {
    let ledger = CallLedger()
    try await withTestCluster(count: 2, router: { Service.router(ledger, member: "m\($0)") }) { cluster in
      let endpoint = cluster[0].endpoint
      // No keepalive: on a loaded machine a connection it suspects would get no calls.
      try await withClient(endpoints: cluster.endpoints, configuration: .init(keepalive: nil)) { client in
        try await client.waitUntilReady()
        await cluster[0].kill()
        #expect(!cluster[0].isRunning)
        // A call that took member 0's connection before the client saw it die could fail (it
        // may have been processed): start once the client knows.
        try await until("the client sees member 0 down") { client.endpointStates.first?.ready == false }
        for index in 0..<6 {
          await ledger.call("k\(index)") { try await client.unary("test/Echo", [UInt8]("k\(index)")).text }
        }
        try await cluster[0].restart()
        #expect(cluster[0].endpoint == endpoint)
        try await client.waitUntilReady(endpoints: 2, timeout: .seconds(60))
        for index in 0..<6 {
          await ledger.call("r\(index)") { try await client.unary("test/Echo", [UInt8]("r\(index)")).text }
        }
      }
    }
    try ledger.verify()
    #expect(ledger.failures.isEmpty)
    #expect((0..<6).allSatisfy { ledger.snapshot["k\($0)"]?.processedBy == ["m1"] })
    #expect((0..<6).contains { ledger.snapshot["r\($0)"]?.processedBy == ["m0"] })
  }

  @Test("a frozen member holds a call past its deadline; thawed, it serves again")
  func freezeAndThaw() async throws {
    let ledger = CallLedger()
    try await withTestCluster(count: 1, router: Service.router(ledger)) { cluster in
      try await withClient(endpoints: cluster.endpoints) { client in
        try await client.waitUntilReady()
        cluster[0].freeze()
        let frozen = await ledger.call("frozen") {
          try await client.unary("test/Echo", [UInt8]("frozen"), options: CallOptions(timeout: .milliseconds(200))).text
        }
        guard case .failed(let reason) = frozen else {
          Issue.record("a frozen member answered: \(frozen)")
          return
        }
        #expect(reason.contains("deadline"), "\(reason)")
        cluster[0].thaw()
        await ledger.call("thawed") { try await client.unary("test/Echo", [UInt8]("thawed")).text }
      }
    }
    try ledger.verify()
    #expect(ledger.failures.keys.sorted() == ["frozen"])
  }

  @Test("a graceful stop finishes the open stream; the next calls go to the other member")
  func gracefulStopMember() async throws {
    let ledger = CallLedger()
    try await withTestCluster(count: 2, router: { Service.router(ledger, member: "m\($0)") }) { cluster in
      try await withClient(endpoints: cluster.endpoints) { client in
        try await client.waitUntilReady()
        let opened = Event()
        async let stream = ledger.call("stream") {
          try await client.bidirectional("test/Chat") { writer, replies in
            var replies = replies.makeAsyncIterator()
            try await writer.write([UInt8]("stream"))
            _ = try await replies.next()
            opened.fire()
            try await writer.write([UInt8]("later"))
            let later = try await replies.next()?.text ?? "-"
            writer.finish()
            return later
          }
        }
        await opened.wait()
        let report = await cluster[0].stopGracefully(deadline: .seconds(60))
        #expect(report.isClean)
        #expect(await stream == .succeeded(reply: "later"))
        for index in 0..<4 {
          await ledger.call("g\(index)") { try await client.unary("test/Echo", [UInt8]("g\(index)")).text }
        }
      }
    }
    try ledger.verify()
    #expect(ledger.failures.isEmpty)
    #expect((0..<4).allSatisfy { ledger.snapshot["g\($0)"]?.processedBy == ["m1"] })
  }

  @Test("a client whose PING ACKs are withheld: the graceful stop's barrier times out, the stream still finishes")
  func withheldPingAcks() async throws {
    let ledger = CallLedger()
    var configuration = Server.Configuration(logger: .disabled)
    configuration.shutdown.goAwayBarrierCap = .milliseconds(200)
    // Every PING ACK the client sends (the round-trip PING after SETTINGS, the stop's barrier
    // PING) is dropped: the server learns neither, and must not wait for ever.
    let plan = try FaultPlan(parsing: "withhold-ping-ack count=1000")
    try await withTestCluster(
      count: 2, configuration: configuration, faults: [0: plan], router: { Service.router(ledger, member: "m\($0)") }
    ) { cluster in
      try await withClient(endpoints: cluster.endpoints) { client in
        try await client.waitUntilReady()
        let opened = Event()
        async let stream = ledger.call("held") {
          try await client.bidirectional("test/Chat") { writer, replies in
            var replies = replies.makeAsyncIterator()
            try await writer.write([UInt8]("held"))
            _ = try await replies.next()
            opened.fire()
            try await writer.write([UInt8]("after the stop began"))
            let reply = try await replies.next()?.text ?? "-"
            writer.finish()
            return reply
          }
        }
        await opened.wait()
        let report = await cluster[0].stopGracefully(deadline: .seconds(60))
        #expect(report.isClean)
        #expect(await stream == .succeeded(reply: "after the stop began"))
      }
      let withheld = await cluster[0].proxy.injections(atLeast: 3)  // the plan, and two ACKs
      #expect(withheld.allSatisfy { $0.action == "withheld PING ACK" || $0.action.hasPrefix("withhold ") })
      #expect(withheld.filter { $0.action == "withheld PING ACK" }.count >= 2)
    }
    try ledger.verify()
    #expect(ledger.snapshot["held"]?.processedBy == ["m0"])
  }

  @Test("the ledger names each broken promise")
  func ledgerViolations() {
    let ledger = CallLedger()
    ledger.processed("twice", by: "a", reply: "twice")
    ledger.processed("twice", by: "b", reply: "twice")
    ledger.succeeded("twice", reply: "twice")
    ledger.started("hanging")
    ledger.failed("silent", reason: " ")
    ledger.processed("x", reply: "x")
    ledger.processed("y", reply: "y")
    ledger.succeeded("x", reply: "y")
    ledger.succeeded("ghost", reply: "ghost")
    ledger.processed("fine", reply: "fine")
    ledger.succeeded("fine", reply: "fine")
    ledger.failed("refused", reason: "unavailable: nothing listened")
    #expect(
      ledger.violations == [
        .succeededUnprocessed(id: "ghost"),
        .notConcluded(id: "hanging"),
        .failedWithoutReason(id: "silent"),
        .processedMoreThanOnce(id: "twice", by: ["a", "b"]),
        .crossedReply(id: "x", reply: "y", expected: ["x"]),
      ])
    #expect(throws: CallLedger.Violations.self) { try ledger.verify() }
  }
}
