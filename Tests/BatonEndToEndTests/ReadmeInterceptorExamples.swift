import BatonClient
import BatonPosix
import BatonServer
import Testing

// The examples of README's "Between the wire and your handler", verbatim: keep them in step.

// MARK: Bearer-token authentication

/// Server side: a call without the right token ends with `unauthenticated` before its handler runs.
struct RequireBearerToken: ServerInterceptor {
  let token: String
  func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws {
    guard call.metadata["authorization"] == "Bearer \(token)" else {
      throw RPCError(code: .unauthenticated, message: "a valid bearer token is required")
    }
    try await next(call)
  }
}

/// Client side: every call carries the token.
struct AttachBearerToken: ClientInterceptor {
  let token: String
  func intercept(_ call: ClientCall, next: (ClientCall) async throws -> Void) async throws {
    var call = call
    call.options.metadata.add("authorization", "Bearer \(token)")
    try await next(call)
  }
}

// MARK: Deadline propagation

/// Server side: makes the call being served visible to the code its handler runs.
struct ExposeServedCall: ServerInterceptor {
  @TaskLocal static var context: ServerContext?
  func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws {
    try await Self.$context.withValue(call.context) { try await next(call) }
  }
}

/// Client side: a call made while serving another gets at most what is left of its deadline.
struct PropagateDeadline: ClientInterceptor {
  func intercept(_ call: ClientCall, next: (ClientCall) async throws -> Void) async throws {
    var call = call
    if let remaining = ExposeServedCall.context?.remainingTime {
      call.options.timeout = min(call.options.timeout ?? remaining, remaining)
    }
    try await next(call)
  }
}

// MARK: Per-call logging

/// One line per call: method, peer, status and handling time.
struct LogCalls: ServerInterceptor {
  let logger: Logger
  func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws {
    let start = ContinuousClock.now
    var status = "ok"
    defer {
      logger.info(
        "call", ("method", call.method), ("peer", call.context.peer), ("status", status),
        ("duration", "\(ContinuousClock.now - start)"))
    }
    do {
      try await next(call)
    } catch {
      status = (error as? RPCError)?.code.description ?? "unknown"
      throw error
    }
  }
}

@Suite("README: interceptor examples", .timeLimit(.minutes(10)))
struct ReadmeInterceptorExamples {
  @Test("bearer token: the server rejects a call without it with unauthenticated, the client interceptor attaches it")
  func bearerToken() async throws {
    var router = echoRouter()
    router.addInterceptor(RequireBearerToken(token: "s3cret"))
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        let error = await #expect(throws: RPCError.self) { try await client.unary("echo/Unary", [UInt8]("hi")) }
        #expect(error?.code == .unauthenticated)
        #expect(client.statistics.retried == 0)
        // Another token is no better.
        let wrong = CallOptions(interceptors: [AttachBearerToken(token: "guess")])
        let refused = await #expect(throws: RPCError.self) {
          try await client.unary("echo/Unary", [UInt8]("hi"), options: wrong)
        }
        #expect(refused?.code == .unauthenticated)
      }
      let configuration = Client.Configuration(interceptors: [AttachBearerToken(token: "s3cret")])
      try await withClient(endpoints: [address], configuration: configuration) { client in
        #expect(try await client.unary("echo/Unary", [UInt8]("hi")).text == "hi")
        let echoed = try await client.bidirectional("echo/Bidi") { writer, responses in
          try await writer.write([UInt8]("a"))
          writer.finish()
          var all: [String] = []
          for try await reply in responses { all.append(reply.text) }
          return all
        }
        #expect(echoed == ["a"])
      }
    }
  }

  @Test("deadline propagation: a handler's outgoing call carries what is left of its caller's deadline")
  func deadlinePropagation() async throws {
    // The back end reports the timeout its call arrived with, in milliseconds ("none" without).
    var backend = Router()
    backend.unary("backend/Timeout") { _, context in
      [UInt8](context.timeout.map { "\(Int($0 / .milliseconds(1)))" } ?? "none")
    }
    try await withTestServer(backend) { _, backendAddress in
      let outgoing = Client.Configuration(interceptors: [PropagateDeadline()])
      try await withClient(endpoints: [backendAddress], configuration: outgoing) { backendClient in
        var frontend = Router()
        frontend.addInterceptor(ExposeServedCall())
        frontend.unary("frontend/Ask") { _, _ in
          try await backendClient.unary("backend/Timeout", [])
        }
        try await withTestServer(frontend) { _, frontendAddress in
          try await withClient(endpoints: [frontendAddress]) { client in
            let bounded = try await client.unary("frontend/Ask", [], options: CallOptions(timeout: .seconds(20)))
            let millis = Int(bounded.text) ?? -1
            #expect(millis > 0 && millis <= 20_000, "the back end saw \(bounded.text) ms")
            let unbounded = try await client.unary("frontend/Ask", [])
            #expect(unbounded.text == "none")
          }
        }
      }
    }
  }

  @Test("per-call logging: one line per call with its method, status and duration")
  func perCallLogging() async throws {
    let records = Locked<[Logger.Record]>([])
    let logger = Logger { record in records.withLock { $0.append(record) } }
    var router = echoRouter()
    router.addInterceptor(LogCalls(logger: logger))
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        _ = try await client.unary("echo/Unary", [UInt8]("hi"))
        await #expect(throws: RPCError.self) { try await client.unary("echo/Fail", []) }
      }
    }
    let lines = records.withLock { $0 }
    #expect(lines.map(\.event) == ["call", "call"])
    let fields = lines.map { Dictionary($0.fields, uniquingKeysWith: { first, _ in first }) }
    #expect(fields.map { $0["method"] } == ["echo/Unary", "echo/Fail"])
    #expect(fields.map { $0["status"] } == ["ok", "notFound"])
    #expect(fields.allSatisfy { $0["duration"]?.hasSuffix("seconds") == true && $0["peer"]?.isEmpty == false })
  }
}
