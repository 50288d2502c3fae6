import BatonCLI
import BatonClient
import BatonServer
import Testing

@Suite("Metadata the client may send", .timeLimit(.minutes(1)))
struct MetadataRulesTests {
  @Test("reserved (baton-) and invalid names fail with invalidArgument before anything is sent")
  func reservedAndInvalid() async throws {
    let seen = Signal()
    var router = echoRouter()
    router.unary("test/Seen") { request, _ in
      seen.fire()
      return request
    }
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        for metadata: Metadata in [
          ["baton-x": "1"], ["Baton-Trace": "1"], ["a b": "1"], ["": "1"], ["ok": "1", "baton-": ""],
        ] {
          let unary = await #expect(throws: RPCError.self) {
            try await client.unary("test/Seen", [], options: CallOptions(metadata: metadata))
          }
          #expect(unary?.code == .invalidArgument, "\(metadata)")
          let streaming = await #expect(throws: RPCError.self) {
            try await client.clientStreaming("test/Seen", options: CallOptions(metadata: metadata)) { _ in }
          }
          #expect(streaming?.code == .invalidArgument, "\(metadata)")
        }
        #expect(!seen.isFired, "a refused call reached the server")
        // Names that merely contain "baton" are the application's.
        let reply = try await client.unary(
          "echo/Metadata", [], options: CallOptions(metadata: ["who": "x", "my-baton-id": "7"]))
        #expect(reply.isEmpty)
      }
    }
  }

  @Test("baton call --metadata baton-x=1 fails with invalid argument")
  func cliReserved() async throws {
    try await withTestServer(echoRouter()) { _, address in
      let captured = CapturedOutput()
      let status = await CLI.main(
        ["baton", "call", "\(address)", "echo/Unary", "--metadata", "baton-x=1"], output: captured.output)
      #expect(status == 1)
      #expect(captured.standardError.contains("invalidArgument"), "\(captured.standardError)")
    }
  }
}
