import BatonClient
import BatonPosix
import BatonServer
import Testing

/// A resolver a test changes at will: the stand-in for DNS answers or a registry.
private final class ScriptedResolver: Resolver {
  private let answer: Locked<[Endpoint]>
  init(_ endpoints: [Endpoint]) { answer = Locked(endpoints) }
  func set(_ endpoints: [Endpoint]) { answer.withLock { $0 = endpoints } }
  func resolve() async throws -> [Endpoint] { answer.withLock { $0 } }
}

/// Runs `body` with `count` servers whose calls to `count/Unary` are tallied per server.
private func withCountingServers<R: Sendable>(
  _ count: Int, served: Mutexed<[Int]>, _ body: ([Endpoint]) async throws -> R
) async throws -> R {
  func start(_ index: Int, _ endpoints: [Endpoint]) async throws -> R {
    guard index < count else { return try await body(endpoints) }
    var router = Router()
    router.unary("count/Unary") { request, _ in
      served.mutate { $0[index] += 1 }
      return request
    }
    return try await withTestServer(router) { _, endpoint in try await start(index + 1, endpoints + [endpoint]) }
  }
  return try await start(0, [])
}

@Suite("Resolution: every address of a name, and an address set that changes under load")
struct ResolverTests {
  @Test("the resolver's set changes under load (added, removed, all replaced): 0 failed calls, calls follow the set")
  func changingSet() async throws {
    let served = Mutexed([0, 0, 0, 0])
    try await withCountingServers(4, served: served) { servers in
      let resolver = ScriptedResolver([servers[0], servers[1]])
      let client = Client(resolver: resolver, configuration: Client.Configuration(resolveInterval: .milliseconds(20)))
      Watchdog.current?.watch { client.debugState }
      let stop = Signal()
      let failures = Mutexed<[String]>([])
      let workers = (0..<8).map { _ in
        Task {
          while !stop.isFired {
            do {
              _ = try await client.unary("count/Unary", [1, 2, 3])
            } catch {
              failures.mutate { $0.append("\(error)") }
            }
          }
        }
      }
      func inUse() -> Set<Endpoint> { Set(client.endpointStates.map(\.endpoint)) }

      try await eventually("both first servers take calls") { served.value[0] > 0 && served.value[1] > 0 }
      resolver.set([servers[0], servers[1], servers[2]])
      try await eventually("an added address takes calls") { served.value[2] > 0 }

      // Calls running on a removed address finish there; none starts there once it is removed.
      func callsLater(_ count: Int, on live: [Int]) async throws {
        let before = live.reduce(0) { $0 + served.value[$1] }
        try await eventually("\(count) calls later") { live.reduce(0) { $0 + served.value[$1] } > before + count }
      }
      resolver.set([servers[1], servers[2]])
      try await eventually("the removed address leaves the set") { inUse() == [servers[1], servers[2]] }
      try await callsLater(300, on: [1, 2])  // what was running on it has finished by now
      let removedTotal = served.value[0]
      try await callsLater(300, on: [1, 2])
      #expect(served.value[0] == removedTotal, "no call starts on an address once it is removed")

      resolver.set([servers[3]])
      try await eventually("all replaced: the new address takes calls") { served.value[3] > 0 }
      try await eventually("only the new address is left") { inUse() == [servers[3]] }
      try await callsLater(300, on: [3])
      let old = served.value[0] + served.value[1] + served.value[2]
      try await callsLater(300, on: [3])
      #expect(served.value[0] + served.value[1] + served.value[2] == old)

      stop.fire()
      for worker in workers { await worker.value }
      await client.close()
      #expect(failures.value.isEmpty, "\(failures.value.prefix(3))")
      #expect(client.statistics.failed == 0)
    }
  }

  @Test("calls spread over every address the resolver gives, one connection each")
  func spread() async throws {
    let served = Mutexed([0, 0, 0])
    try await withCountingServers(3, served: served) { servers in
      // No keepalive: a connection it suspects on a loaded machine would skip its turn.
      let client = Client(resolver: ScriptedResolver(servers), configuration: Client.Configuration(keepalive: nil))
      defer { Task { await client.close() } }
      try await client.waitUntilReady()
      #expect(client.endpointStates.count == 3)
      for _ in 0..<300 { _ = try await client.unary("count/Unary", []) }
      #expect(served.value == [100, 100, 100], "round-robin over three ready connections")
      await client.close()
    }
  }

  @Test("a name that does not resolve fails a call at once with unavailable and the resolver's reason")
  func unresolvable() async throws {
    let client = Client(endpoints: [Endpoint(host: "no-such-host.invalid", port: 80)])
    let started = ContinuousClock.now
    await #expect {
      _ = try await client.unary("echo/Unary", [])
    } throws: { error in
      guard let error = error as? RPCError else { return false }
      return error.code == .unavailable && error.message.contains("no-such-host.invalid")
    }
    // The system resolver may first wait for a nameserver that does not answer (5 s a try on a
    // machine without network, and a loaded one is slower still): the bound only tells its
    // answer from a call that waits for a connection for `maxWaitForConnection` (30 s).
    #expect(ContinuousClock.now - started < .seconds(25), "fails on the resolver's answer, not on a wait")
    await client.close()
  }

  @Test("a numeric address given twice is one endpoint; brackets around IPv6 are accepted")
  func numeric() async throws {
    let resolved = try await DNSResolver([
      Endpoint(host: "127.0.0.1", port: 1), Endpoint(host: "127.0.0.1", port: 1), Endpoint(host: "[::1]", port: 2),
    ]).resolve()
    #expect(resolved == [Endpoint(host: "127.0.0.1", port: 1), Endpoint(host: "::1", port: 2)])
  }

  @Test("a name resolves to each of its addresses")
  func localhost() async throws {
    let resolved = try await DNSResolver([Endpoint(host: "localhost", port: 9)]).resolve()
    #expect(!resolved.isEmpty)
    #expect(resolved.allSatisfy { $0.port == 9 && ($0.host == "127.0.0.1" || $0.host == "::1") })
  }
}
