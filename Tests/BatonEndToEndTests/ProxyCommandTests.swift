import BatonCLI
import BatonClient
import Foundation
import Glibc
import Testing

/// `baton proxy`: the fault plan as a standalone process, in front of `baton serve` processes,
/// with a real client: what a test in another language does.
@Suite("baton proxy", .timeLimit(.minutes(5)))
struct ProxyCommandTests {
  private func baton(_ arguments: String...) async -> (status: Int32, out: String, err: String) {
    let captured = CapturedOutput()
    let status = await CLI.main(["baton"] + arguments, output: captured.output)
    return (status, captured.standardOutput, captured.standardError)
  }

  @Test("--help documents the plan syntax; a bad plan or command line exits 2 saying where and why")
  func usage() async throws {
    let help = await baton("proxy", "--help")
    #expect(help.status == 0)
    for word in [
      "goaway [last=N]", "reset stream=N", "cut [mid-frame]", "stall DURATION", "withhold-ping-ack",
      "delay DURATION", "drip", "after-opens=N", "at-message=M", "--seed N", "--faults-file PATH",
    ] {
      #expect(help.out.contains(word), "\(word)")
    }
    let top = await baton("--help")
    #expect(top.out.contains("  proxy "))

    let bad = await baton("proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--faults", "goaway lst=3")
    #expect(bad.status == 2)
    #expect(bad.err.contains("fault plan, line 1, column 8: unknown option 'lst' for goaway"), "\(bad.err)")
    let missing = await baton("proxy", "--listen", "127.0.0.1:0")
    #expect(missing.status == 2)
    #expect(missing.err.contains("'--upstream' is required"))
    let both = await baton(
      "proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--faults", "cut", "--faults-file", "/x")
    #expect(both.status == 2)
    let seed = await baton("proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--seed", "-1")
    #expect(seed.status == 2)
    let file = await baton("proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--faults-file", "/nope")
    #expect(file.status == 2)
    #expect(file.err.contains("cannot read the fault plan file '/nope'"))
  }

  @Test("two baton serve processes behind baton proxy with a GOAWAY plan: the client retries, no call fails")
  func goAwayThroughProcesses() async throws {
    let first = try await BatonProcess(serve: [])
    let second = try await BatonProcess(serve: [])
    let planFile = FileManager.default.temporaryDirectory.appendingPathComponent(
      "plan-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).txt")
    try Data("# the 3rd OPEN is refused and retried\ngoaway last=3 after-opens=3\n".utf8).write(to: planFile)
    defer { try? FileManager.default.removeItem(at: planFile) }
    let proxy = try await BatonProcess(
      launching: [
        "proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:\(first.port)", "--faults-file",
        planFile.path, "--seed", "7",
      ])
    let endpoints = [Endpoint(host: "127.0.0.1", port: proxy.port), Endpoint(host: "127.0.0.1", port: second.port)]
    // No keepalive: on a loaded machine a connection it suspects would skip its turn, and the
    // proxy might not see its 3rd OPEN.
    try await withClient(endpoints: endpoints, configuration: .init(keepalive: nil)) { client in
      try await client.waitUntilReady()
      for index in 0..<8 {
        let reply = try await client.unary("demo.Echo/Unary", [UInt8]("p\(index)")).text
        #expect(reply == "p\(index)")
      }
      #expect(client.statistics.failed == 0)
      #expect(client.statistics.retried >= 1)
    }
    proxy.signal(SIGTERM)
    #expect(await proxy.exitStatus(timeout: .seconds(30)) == 0)
    let log = proxy.standardError()
    #expect(log.contains("baton info fault planned fault=1 plan=\"goaway last=3 after-opens=3\" seed=7"), "\(log)")
    #expect(log.contains("baton info fault injected fault=1 connection=1 side=client frame="), "\(log)")
    #expect(log.contains("stream=5 message=0 action=\"goaway last=3 NO_ERROR\""), "\(log)")
    #expect(log.contains("baton info stopped proxied="), "\(log)")
    for server in [first, second] {
      server.signal(SIGTERM)
      #expect(await server.exitStatus(timeout: .seconds(30)) == 0)
    }
  }
}
