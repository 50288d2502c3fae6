import BatonClient
import BatonPosix
import BatonServer
import Testing

/// A router whose methods echo what they see, so that message wrappers show in the replies, and
/// that report the request metadata the handler saw.
private func transformRouter(handled: EventLog = EventLog()) -> Router {
  var router = Router()
  router.unary("t/Unary") { request, context in
    handled.add("t/Unary")
    context.setTrailingMetadata(["seen": context.requestMetadata.values(for: "mark").joined(separator: ",")])
    return request
  }
  router.serverStreaming("t/Server") { request, writer, _ in
    handled.add("t/Server")
    try await writer.write(request)
    try await writer.write(request)
  }
  router.clientStreaming("t/Client") { requests, _ in
    handled.add("t/Client")
    var parts: [String] = []
    for try await message in requests { parts.append(message.text) }
    return [UInt8](parts.joined(separator: "|"))
  }
  router.bidirectional("t/Bidi") { requests, writer, _ in
    handled.add("t/Bidi")
    for try await message in requests { try await writer.write(message) }
  }
  return router
}

/// Counts and orders what happened, across tasks.
final class EventLog: Sendable {
  private let events = Locked<[String]>([])
  func add(_ event: String) { events.withLock { $0.append(event) } }
  var all: [String] { events.withLock { $0 } }
}

/// One call of each shape against `transformRouter`, each sending "x" (and "y" where a stream
/// allows): the replies as text.
private func callEveryShape(_ client: Client, options: CallOptions = .defaults) async throws -> [String] {
  let unary = try await client.unary("t/Unary", [UInt8]("x"), options: options)
  let server = try await client.serverStreaming("t/Server", [UInt8]("x"), options: options) { responses in
    var all: [String] = []
    for try await reply in responses { all.append(reply.text) }
    return all.joined(separator: "+")
  }
  let clientStreamed = try await client.clientStreaming("t/Client", options: options) { writer in
    try await writer.write([UInt8]("x"))
    try await writer.write([UInt8]("y"))
  }
  let bidi = try await client.bidirectional("t/Bidi", options: options) { writer, responses in
    try await writer.write([UInt8]("x"))
    try await writer.write([UInt8]("y"))
    writer.finish()
    var all: [String] = []
    for try await reply in responses { all.append(reply.text) }
    return all.joined(separator: "+")
  }
  return [unary.text, server, clientStreamed.text, bidi]
}

/// Appends its name to every request and response message and to the "mark" metadata, and
/// records entering and leaving.
private struct Marking: ServerInterceptor, ClientInterceptor {
  let name: String
  let tally: EventLog

  func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws {
    var call = call
    call.metadata.add("mark", name)
    call.interceptRequests { [name] in $0 + [UInt8](name) }
    call.interceptResponses { [name] in $0 + [UInt8](name.uppercased()) }
    tally.add("enter \(name) \(call.shape)")
    defer { tally.add("leave \(name)") }
    try await next(call)
  }

  func intercept(_ call: ClientCall, next: (ClientCall) async throws -> Void) async throws {
    var call = call
    call.options.metadata.add("mark", name)
    call.interceptRequests { [name] in $0 + [UInt8](name) }
    call.interceptResponses { [name] in $0 + [UInt8](name.uppercased()) }
    tally.add("enter \(name) \(call.shape)")
    defer { tally.add("leave \(name)") }
    try await next(call)
  }
}

/// Rejects every call without running the rest of the chain, counting the calls it saw.
private struct Rejecting: ServerInterceptor, ClientInterceptor {
  let tally: EventLog
  func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws {
    tally.add(call.method)
    throw RPCError(code: .permissionDenied, message: "not you")
  }
  func intercept(_ call: ClientCall, next: (ClientCall) async throws -> Void) async throws {
    tally.add(call.method)
    throw RPCError(code: .permissionDenied, message: "not you")
  }
}

@Suite("Interceptors on both sides, on all four call shapes", .timeLimit(.minutes(10)))
struct InterceptorTests {
  @Test("server interceptors run first-registered outermost: metadata, requests in order, responses in reverse")
  func serverOrder() async throws {
    let tally = EventLog()
    var router = transformRouter()
    router.addInterceptor(Marking(name: "a", tally: tally))
    router.addInterceptor(Marking(name: "b", tally: tally))
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        let replies = try await callEveryShape(client)
        // Requests: wire → a → b → handler; responses: handler → b → a → wire.
        #expect(replies == ["xabBA", "xabBA+xabBA", "xab|yabBA", "xabBA+yabBA"])
        let unary = try await client.unaryResponse("t/Unary", [UInt8]("x"))
        #expect(unary.trailers["seen"] == "a,b")
      }
    }
    let shapes = CallShape.allCases.flatMap { ["enter a \($0)", "enter b \($0)", "leave b", "leave a"] }
    #expect(Array(tally.all.prefix(16)) == shapes)
  }

  @Test("client interceptors: the configuration's outermost, then the call's; requests in order, responses in reverse")
  func clientOrder() async throws {
    let tally = EventLog()
    try await withTestServer(transformRouter()) { _, address in
      let configuration = Client.Configuration(interceptors: [Marking(name: "a", tally: tally)])
      try await withClient(endpoints: [address], configuration: configuration) { client in
        let replies = try await callEveryShape(
          client, options: CallOptions(interceptors: [Marking(name: "b", tally: tally)]))
        // Requests: caller → a → b → wire; responses: wire → b → a → caller.
        #expect(replies == ["xabBA", "xabBA+xabBA", "xab|yabBA", "xabBA+yabBA"])
        let unary = try await client.unaryResponse(
          "t/Unary", [UInt8]("x"), options: CallOptions(interceptors: [Marking(name: "b", tally: tally)]))
        #expect(unary.trailers["seen"] == "a,b")
      }
    }
    let shapes = CallShape.allCases.flatMap { ["enter a \($0)", "enter b \($0)", "leave b", "leave a"] }
    #expect(Array(tally.all.prefix(16)) == shapes)
  }

  @Test("a call a server interceptor rejects is processed: TRAILERS with the error, no handler, no retry")
  func serverRejection() async throws {
    let seen = EventLog()
    let handled = EventLog()
    var router = transformRouter(handled: handled)
    router.addInterceptor(Rejecting(tally: seen))
    // Two servers that both reject: a call retried as unprocessed would reach the second one.
    try await withTestServer(router) { _, first in
      try await withTestServer(router) { _, second in
        try await withClient(endpoints: [first, second]) { client in
          try await client.waitUntilReady()
          for shape in CallShape.allCases {
            let error = await #expect(throws: RPCError.self) {
              try await callOne(shape, client)
            }
            #expect(error?.code == .permissionDenied, "\(shape)")
            #expect(error?.message == "not you", "\(shape)")
          }
          #expect(client.statistics.retried == 0)
          #expect(client.statistics.failed == 4)
        }
      }
    }
    #expect(seen.all.sorted() == ["t/Bidi", "t/Client", "t/Server", "t/Unary"])
    #expect(handled.all.isEmpty)
  }

  @Test("a call a client interceptor rejects is never sent")
  func clientRejection() async throws {
    let rejected = EventLog()
    let serverSaw = EventLog()
    var router = transformRouter()
    router.addInterceptor(Marking(name: "server", tally: serverSaw))
    try await withTestServer(router) { _, address in
      let configuration = Client.Configuration(interceptors: [Rejecting(tally: rejected)])
      try await withClient(endpoints: [address], configuration: configuration) { client in
        for shape in CallShape.allCases {
          let error = await #expect(throws: RPCError.self) { try await callOne(shape, client) }
          #expect(error?.code == .permissionDenied)
        }
        #expect(client.statistics.failed == 4)
      }
    }
    #expect(rejected.all.count == 4)
    #expect(serverSaw.all.isEmpty)
  }

  @Test("interceptors on both sides observe the final status of a failing handler")
  func observeStatus() async throws {
    let serverStatus = EventLog()
    let clientStatus = EventLog()
    var router = echoRouter()
    router.addInterceptor(StatusRecorder(tally: serverStatus))
    try await withTestServer(router) { _, address in
      let configuration = Client.Configuration(interceptors: [StatusRecorder(tally: clientStatus)])
      try await withClient(endpoints: [address], configuration: configuration) { client in
        _ = try await client.unary("echo/Unary", [UInt8]("hi"))
        await #expect(throws: RPCError.self) { try await client.unary("echo/Fail", []) }
        let count = try await client.serverStreaming("echo/Expand", [UInt8]("3")) { responses in
          var count = 0
          for try await _ in responses { count += 1 }
          return count
        }
        #expect(count == 3)
      }
    }
    #expect(serverStatus.all == ["echo/Unary ok", "echo/Fail notFound", "echo/Expand ok"])
    #expect(clientStatus.all == ["echo/Unary ok", "echo/Fail notFound", "echo/Expand ok"])
  }

  @Test("a response wrapper that throws fails the call with its error on both sides")
  func throwingWrapper() async throws {
    var router = transformRouter()
    router.addInterceptor(FailingResponses())
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        for shape in CallShape.allCases {
          let error = await #expect(throws: RPCError.self) { try await callOne(shape, client) }
          #expect(error?.code == .dataLoss, "\(shape)")
        }
      }
    }
  }
}

/// Records "method status" once each call ended.
private struct StatusRecorder: ServerInterceptor, ClientInterceptor {
  let tally: EventLog
  func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws {
    do {
      try await next(call)
      tally.add("\(call.method) ok")
    } catch {
      tally.add("\(call.method) \((error as? RPCError)?.code.description ?? "\(error)")")
      throw error
    }
  }
  func intercept(_ call: ClientCall, next: (ClientCall) async throws -> Void) async throws {
    do {
      try await next(call)
      tally.add("\(call.method) ok")
    } catch {
      tally.add("\(call.method) \((error as? RPCError)?.code.description ?? "\(error)")")
      throw error
    }
  }
}

/// Fails every response message with `dataLoss`.
private struct FailingResponses: ServerInterceptor {
  func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws {
    var call = call
    call.interceptResponses { _ in throw RPCError(code: .dataLoss, message: "scrambled") }
    try await next(call)
  }
}

/// One call of `shape` against `transformRouter`, reading every reply.
private func callOne(_ shape: CallShape, _ client: Client) async throws {
  switch shape {
  case .unary:
    _ = try await client.unary("t/Unary", [UInt8]("x"))
  case .serverStreaming:
    try await client.serverStreaming("t/Server", [UInt8]("x")) { responses in
      for try await _ in responses {}
    }
  case .clientStreaming:
    _ = try await client.clientStreaming("t/Client") { writer in try await writer.write([UInt8]("x")) }
  case .bidirectional:
    try await client.bidirectional("t/Bidi") { writer, responses in
      try await writer.write([UInt8]("x"))
      writer.finish()
      for try await _ in responses {}
    }
  }
}
