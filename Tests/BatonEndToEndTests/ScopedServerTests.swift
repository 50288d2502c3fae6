import BatonClient
import BatonServer
import Testing

/// `withServer(configuration:router:_:)`: the README's server-and-client shape. A bind error is
/// thrown before the body runs, so it can never hide behind a client's deadline.
@Suite("withServer", .timeLimit(.minutes(1)))
struct ScopedServerTests {
  @Test("a taken port is thrown as the bind error before the body runs, not as a client's deadline")
  func takenPort() async throws {
    try await withTestServer(echoRouter()) { _, taken in
      var bodyRan = false
      var clientCalled = false
      let configuration = Server.Configuration(host: "127.0.0.1", port: taken.port, logger: .disabled)
      // The README example's shape: a client call with a 2 s deadline inside the server's scope.
      // Before withServer, that call waited for a ready endpoint and failed with deadlineExceeded.
      let error = await #expect(throws: RPCError.self) {
        try await withServer(configuration: configuration, router: echoRouter()) { server in
          bodyRan = true
          return try await withClient(endpoints: [try await server.listeningAddress]) { client in
            clientCalled = true
            return try await client.unary("echo/Unary", [1], options: CallOptions(timeout: .seconds(2)))
          }
        }
      }
      #expect(error?.code == .unavailable)
      #expect(
        error?.message.contains("could not listen on 127.0.0.1:\(taken.port)") == true, "\(String(describing: error))")
      #expect(error?.message.contains("Address already in use") == true, "\(String(describing: error))")
      #expect(error?.cause != nil, "the socket error is kept underneath")
      #expect(!bodyRan)
      #expect(!clientCalled)
    }
  }

  @Test("the body runs against a listening server, its value is returned, and the server has stopped")
  func returnsValueAndStops() async throws {
    var seen: Server?
    let reply = try await withServer(configuration: .init(logger: .disabled), router: echoRouter()) { server in
      seen = server
      #expect(server.phase == .running)
      let address = try await server.listeningAddress
      return try await withClient(endpoints: [address]) { client in
        try await client.unary("echo/Unary", Array("hello".utf8), options: CallOptions(timeout: .seconds(30)))
      }
    }
    #expect(reply == Array("hello".utf8))
    let server = try #require(seen)
    #expect(server.phase == .stopped)
    let report = await server.stopReport()
    #expect(report.isClean)
  }

  @Test("an error thrown by the body is rethrown once the server has stopped")
  func bodyErrorStopsServer() async throws {
    struct Oops: Error, Equatable {}
    var seen: Server?
    await #expect(throws: Oops.self) {
      try await withServer(configuration: .init(logger: .disabled), router: echoRouter()) { server in
        seen = server
        throw Oops()
      }
    }
    #expect(try #require(seen).phase == .stopped)
  }
}
