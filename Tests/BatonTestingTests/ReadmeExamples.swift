import BatonClient
import BatonTesting
import Testing

// The two Swift examples of the README's "Testing your service against interruptions", verbatim:
// they compile and pass here, so the README cannot drift from what the kit does.
@Suite("README examples", .timeLimit(.minutes(2)))
struct ReadmeExamples {
  @Test func bidiSurvivesGoAwayAtThirdMessage() async throws {
    let ledger = CallLedger()
    let plan = try FaultPlan(parsing: "goaway last=0 stream=1 at-message=3")
    try await withTestCluster(
      count: 2, faults: [0: plan],
      router: { member in
        var router = Router()
        router.bidirectional("test/Chat") { requests, writer, _ in
          var id: String?
          for try await message in requests {
            if id == nil {
              id = String(decoding: message, as: UTF8.self)
              ledger.processed(id ?? "", by: "m\(member)")
            }
            try await writer.write(message)
          }
        }
        return router
      }
    ) { cluster in
      try await withClient(endpoints: cluster.endpoints) { client in
        try await client.waitUntilReady()  // both connected: the first call goes to member 0
        let outcome = await ledger.call("chat-1") {
          try await client.bidirectional("test/Chat") { writer, replies in
            var replies = replies.makeAsyncIterator()
            var echoed: [String] = []
            for message in ["chat-1", "two", "three"] { try await writer.write(Array(message.utf8)) }
            for _ in 0..<3 { echoed.append(String(decoding: try await replies.next() ?? [], as: UTF8.self)) }
            for message in ["four", "five"] {
              try await writer.write(Array(message.utf8))
              echoed.append(String(decoding: try await replies.next() ?? [], as: UTF8.self))
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

  @Test func stalledServer() async throws {
    let ledger = CallLedger()
    var router = Router()
    router.unary("test/Echo") { request, _ in
      let id = String(decoding: request, as: UTF8.self)
      ledger.processed(id, reply: id)
      return request
    }
    try await withTestServer(router: router, faults: try FaultPlan(parsing: "stall 6s after-opens=1")) { test in
      try await withClient(endpoints: [test.endpoint]) { client in
        try await client.waitUntilReady()
        let impatient = await ledger.call("impatient") {
          let reply = try await client.unary(
            "test/Echo", Array("impatient".utf8), options: CallOptions(timeout: .milliseconds(300)))
          return String(decoding: reply, as: UTF8.self)
        }
        guard case .failed(let reason) = impatient else {
          Issue.record("a stalled server answered: \(impatient)")
          return
        }
        #expect(reason.contains("deadline"))
        // No deadline: the client's keepalive gives up on the silent connection within about 3 s
        // (PING unanswered). The call fails `unavailable`: it may have been processed, since the
        // proxy may still deliver it. The next call goes over a new connection.
        let patient = await ledger.call("patient") {
          String(decoding: try await client.unary("test/Echo", Array("patient".utf8)), as: UTF8.self)
        }
        guard case .failed(let why) = patient else {
          Issue.record("a stalled connection answered: \(patient)")
          return
        }
        #expect(why.contains("keepalive"))
        await ledger.call("later") {
          String(decoding: try await client.unary("test/Echo", Array("later".utf8)), as: UTF8.self)
        }
      }
      #expect(test.proxy?.trace.map(\.action) == ["stall 6s"])
    }
    try ledger.verify()
    #expect(ledger.failures.keys.sorted() == ["impatient", "patient"])
  }
}
