import BatonClient
import Foundation
import Glibc
import Testing

@Suite(
  "Real addresses in network namespaces: a name with several addresses, a partitioned server",
  .enabled(if: NetworkNamespace.isAvailable, "needs root and iproute2 (network namespaces)"))
struct RealAddressTests {
  @Test("`baton load` on a name with three addresses spreads its calls over the three servers, 0 failed")
  func nameWithThreeAddresses() async throws {
    let namespace = try NetworkNamespace(tag: "dns")
    let addresses = ["10.213.0.1", "10.213.0.2", "10.213.0.3"]
    for address in addresses { try namespace.addLoopbackAddress(address) }
    try namespace.setHosts(addresses.map { "\($0) pods.baton.test" })
    var servers: [BatonProcess] = []
    for address in addresses {
      servers.append(try await BatonProcess(serve: ["--host", address, "--port", "7000"], namespace: namespace.name))
    }
    defer { for server in servers { server.signal(SIGKILL) } }
    let summary = try NetworkNamespace.run(
      [
        "netns", "exec", namespace.name, try BatonProcess.executable.path, "load", "--endpoints",
        "pods.baton.test:7000",
        "--seconds", "1", "--concurrency", "6", "--json",
      ])
    let line = try #require(summary.split(separator: "\n").last)
    let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    #expect(json["failed"] as? Int == 0, "\(line)")
    let perEndpoint = try #require(json["endpoints"] as? [String: Int], "\(line)")
    #expect(Set(perEndpoint.keys) == Set(addresses.map { "\($0):7000" }))
    #expect(perEndpoint.values.allSatisfy { $0 > 0 }, "every address takes calls: \(perEndpoint)")
  }

  @Test("a server cut off by a link taken down (no FIN, no RST) is left within the keepalive bound")
  func partition() async throws {
    let namespace = try NetworkNamespace(tag: "cut")
    let prefix = "10.214.\(getpid() % 250)"
    let link = try namespace.connect(prefix: prefix)
    let remote = try await BatonProcess(serve: ["--host", "\(prefix).2"], namespace: namespace.name)
    let local = try await BatonProcess(serve: [])
    defer {
      remote.signal(SIGKILL)
      local.signal(SIGKILL)
    }
    let endpoints = [Endpoint(host: "\(prefix).2", port: remote.port), Endpoint(host: "127.0.0.1", port: local.port)]
    try await withClient(endpoints: endpoints) { client in
      try await client.waitUntilReady()
      try namespace.setLink(link, up: false)
      let cutAt = ContinuousClock.now
      // No deadline: only keepalive can end the call that went to the partitioned server.
      let outcomes = await concurrentOutcomes(2) { try await client.unary("demo.Echo/Unary", [UInt8]("x")) }
      let failures = outcomes.compactMap { if case .failure(let error) = $0 { error } else { nil } }
      let failure = try #require(failures.first, "the call on the partitioned server must fail, not hang")
      #expect(failures.count == 1)
      #expect(failure.code == .unavailable && failure.message.contains("keepalive"), "\(failure)")
      #expect(ContinuousClock.now - cutAt < .seconds(10), "a bound for a loaded machine, not a measurement")
      for _ in 0..<10 { #expect(try await client.unary("demo.Echo/Unary", [UInt8]("y")).text == "y") }
      let cut = try #require(client.endpointStates.first { $0.endpoint == endpoints[0] })
      #expect(cut.connectionsLost == 1)
    }
  }
}
