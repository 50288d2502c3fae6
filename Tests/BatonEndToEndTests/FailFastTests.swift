import BatonCLI
import BatonClient
import BatonServer
import Foundation
import Testing

@Suite("Failing fast when no endpoint can be reached", .timeLimit(.minutes(2)))
struct FailFastTests {
  @Test("refused everywhere: a call fails at once with unavailable and says why; waitForReady waits")
  func refusedEverywhere() async throws {
    let first = try PortReservation()
    let second = try PortReservation()
    let endpoints = [first, second].map { Endpoint(host: "127.0.0.1", port: $0.port) }
    // Waiting would take 60 s: whatever the load, failing fast is far quicker, and its message
    // ("could not be reached", not "became ready" or a deadline) tells the two apart.
    var configuration = Client.Configuration()
    configuration.maxWaitForConnection = .seconds(60)
    try await withClient(endpoints: endpoints, configuration: configuration) { client in
      for options in [CallOptions(), CallOptions(timeout: .seconds(60))] {
        let started = ContinuousClock.now
        let error = await #expect(throws: RPCError.self) { try await client.unary("echo/Unary", [], options: options) }
        #expect(ContinuousClock.now - started < .seconds(30))
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("no endpoint could be reached") == true, "\(String(describing: error))")
        #expect(error?.message.contains("Connection refused") == true, "\(String(describing: error))")
        #expect(
          error?.message.contains("\(endpoints[1])") == true, "every endpoint is named: \(String(describing: error))")
      }
      // Streaming calls take the same path.
      let streaming = await #expect(throws: RPCError.self) {
        try await client.bidirectional("echo/Bidi") { writer, _ in try await writer.write([1]) }
      }
      #expect(streaming?.code == .unavailable)
      // Asked to wait for ready, the call waits out its deadline instead.
      let started = ContinuousClock.now
      let waited = await #expect(throws: RPCError.self) {
        try await client.unary("echo/Unary", [], options: CallOptions(timeout: .milliseconds(400), waitForReady: true))
      }
      #expect(waited?.code == .deadlineExceeded)
      #expect(ContinuousClock.now - started >= .milliseconds(350))
    }
    first.release()
    second.release()
  }

  @Test("one endpoint refusing and one answering: every call succeeds on the one that answers")
  func oneOfTwoRefuses() async throws {
    let dead = try PortReservation()
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [Endpoint(host: "127.0.0.1", port: dead.port), address]) { client in
        for index in 0..<50 {
          let reply = try await client.unary("echo/Unary", [UInt8]("\(index)"))
          #expect(reply.text == "\(index)")
        }
        #expect(client.statistics.failed == 0)
      }
    }
    dead.release()
  }

  @Test("a call started while its only server restarts waits for the reconnect attempt, not failing at once")
  func waitsForFirstAttempt() async throws {
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address]) { client in
        // Right after creation the client is connecting: the first call waits for that attempt.
        let reply = try await client.unary("echo/Unary", [UInt8]("first"))
        #expect(reply.text == "first")
      }
    }
  }

  @Test("baton call to a port nothing listens on says unavailable and connection refused within 1 s")
  func cliRefused() async throws {
    let nobody = try PortReservation()
    let captured = CapturedOutput()
    let started = ContinuousClock.now
    let status = await CLI.main(
      ["baton", "call", "127.0.0.1:\(nobody.port)", "demo.Echo/Unary"], output: captured.output)
    let took = ContinuousClock.now - started
    #expect(status == 1)
    #expect(captured.standardError.contains("unavailable"), "\(captured.standardError)")
    #expect(captured.standardError.contains("Connection refused"), "\(captured.standardError)")
    // The command takes 0.01 s on an idle machine; in-process, beside the parallel suite on two
    // loaded cores, the bound is generous (the call's own timeout is 10 s).
    #expect(took < .seconds(8), "took \(took)")
    nobody.release()
  }
}
