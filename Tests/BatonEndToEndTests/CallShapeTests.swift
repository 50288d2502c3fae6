import BatonClient
import BatonPosix
import BatonServer
import Testing

@Suite("The four call shapes, end to end on 127.0.0.1", .timeLimit(.minutes(10)))
struct CallShapeTests {
  @Test("a unary call echoes its message")
  func unary() async throws {
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address]) { client in
        let reply = try await client.unary("echo/Unary", [UInt8]("hello"))
        #expect(reply.text == "hello")
        let empty = try await client.unary("echo/Unary", [])
        #expect(empty.isEmpty)
      }
    }
  }

  @Test("a server-streaming call delivers every reply in order")
  func serverStreaming() async throws {
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address]) { client in
        let replies = try await client.serverStreaming("echo/Expand", [UInt8]("100")) { responses in
          var all: [String] = []
          for try await reply in responses { all.append(reply.text) }
          return all
        }
        #expect(replies == (0..<100).map(String.init))
      }
    }
  }

  @Test("a client-streaming call sees every request and answers once")
  func clientStreaming() async throws {
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address]) { client in
        let reply = try await client.clientStreaming("echo/Collect") { writer in
          for index in 0..<50 { try await writer.write([UInt8]("\(index % 10)")) }
        }
        #expect(reply.text == String(repeating: "0123456789", count: 5))
      }
    }
  }

  @Test("a bidirectional call echoes while both sides stream")
  func bidirectional() async throws {
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address]) { client in
        let echoed = try await client.bidirectional("echo/Bidi") { writer, responses in
          var iterator = responses.makeAsyncIterator()
          var got: [String] = []
          for index in 0..<200 {
            try await writer.write([UInt8]("m\(index)"))
            if let reply = try await iterator.next() { got.append(reply.text) }
          }
          writer.finish()
          let got56 = try await iterator.next()
          #expect(got56 == nil)
          return got
        }
        #expect(echoed == (0..<200).map { "m\($0)" })
      }
    }
  }

  @Test("for try await over a stream runs inside an actor, on the server and on the client")
  func iterationInsideActors() async throws {
    // The streams' next(isolation:) runs on the caller's executor rather than behind an
    // isolated parameter: iterating from actor-isolated code must still see every message.
    let tally = Tally()
    var router = Router()
    router.clientStreaming("actor/Count") { requests, _ in Array("\(try await tally.count(requests))".utf8) }
    router.serverStreaming("echo/Expand") { request, writer, _ in
      let count = Int(String(decoding: request, as: UTF8.self)) ?? 0
      for index in 0..<count { try await writer.write(Array("\(index)".utf8)) }
    }
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        let counted = try await client.clientStreaming("actor/Count") { writer in
          for index in 0..<300 { try await writer.write([UInt8]("\(index)")) }
        }
        #expect(counted.text == "300")
        let replies = try await tally.collect(client, "echo/Expand", count: 300)
        #expect(replies == (0..<300).map(String.init))
      }
    }
  }

  @Test("metadata and trailers travel both ways")
  func metadata() async throws {
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address]) { client in
        let response = try await client.unaryResponse(
          "echo/Metadata", [UInt8]("x"), options: CallOptions(metadata: ["who": "tester"]))
        #expect(response.headers["reply-to"] == "tester")
        #expect(response.trailers["done"] == "yes")
      }
    }
  }

  @Test("a thrown RPCError becomes the status; any other error becomes internal without its text")
  func errors() async throws {
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address]) { client in
        let notFound = await #expect(throws: RPCError.self) { try await client.unary("echo/Fail", []) }
        #expect(notFound?.code == .notFound)
        #expect(notFound?.message == "no such thing")
        let crash = await #expect(throws: RPCError.self) { try await client.unary("echo/Crash", []) }
        #expect(crash?.code == .internal)
        #expect(crash?.message.contains("Secret") == false)
        let missing = await #expect(throws: RPCError.self) { try await client.unary("echo/Nope", []) }
        #expect(missing?.code == .unimplemented)
      }
    }
  }

  @Test("a handler sees the call's deadline, and none when the caller set none")
  func handlerSeesDeadline() async throws {
    var router = Router()
    router.unary("test/Timeout") { _, context in
      [UInt8](context.timeout.map { "\($0.components.seconds)" } ?? "none")
    }
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        // Connected first: the deadline runs from the call's start, and a loaded machine can take
        // longer than a second to connect.
        try await client.waitUntilReady()
        let withDeadline = try await client.unary("test/Timeout", [], options: CallOptions(timeout: .seconds(30)))
        // 30 s minus transit, rounded down to whole seconds: 29 or 30 on an idle machine; a
        // loaded one may take seconds between the call's start and its request leaving.
        #expect((25...30).contains(Int(withDeadline.text) ?? -1), "the handler saw \(withDeadline.text)")
        let without = try await client.unary("test/Timeout", [])
        #expect(without.text == "none")
      }
    }
  }
}

/// Iterates streams from actor-isolated code (see ``CallShapeTests/iterationInsideActors()``).
private actor Tally {
  private var seen: [String] = []

  func count(_ requests: RequestStream) async throws -> Int {
    var count = 0
    for try await _ in requests { count += 1 }
    return count
  }

  func collect(_ client: Client, _ method: String, count: Int) async throws -> [String] {
    seen = []
    try await client.serverStreaming(method, Array("\(count)".utf8)) { responses in
      for try await reply in responses { seen.append(reply.text) }
    }
    return seen
  }

  @Test("a handler runs on an event-loop thread from its first line, and after suspending (20 calls)")
  func handlerOnLoop() async throws {
    var router = Router()
    router.unary("test/Where") { _, _ in
      var names = [EventLoop.currentThreadName]
      await Task.yield()
      names.append(EventLoop.currentThreadName)
      try await Task.sleep(for: .milliseconds(1))
      names.append(EventLoop.currentThreadName)
      return Array(names.joined(separator: ",").utf8)
    }
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        for call in 0..<20 {
          let names = String(decoding: try await client.unary("test/Where", []), as: UTF8.self).split(separator: ",")
          #expect(names.count == 3 && names.allSatisfy { $0.hasPrefix("baton-loop-") }, "call \(call): \(names)")
        }
      }
    }
  }
}
