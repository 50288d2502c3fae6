import BatonClient
import BatonServer
import Foundation
import Glibc
import Testing

/// GET `path` on 127.0.0.1:`port`; returns the status code and body. Runs on its own thread.
func httpGet(port: Int, _ path: String) async -> (status: Int, body: String) {
  await withCheckedContinuation { continuation in
    Thread {
      guard let peer = try? RawPeer(port: port) else { return continuation.resume(returning: (0, "")) }
      peer.send(Array("GET \(path) HTTP/1.1\r\nHost: probe\r\n\r\n".utf8))
      var bytes: [UInt8] = []
      var chunk = [UInt8](repeating: 0, count: 4096)
      while true {
        let n = chunk.withUnsafeMutableBytes { recv(peer.fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        bytes += chunk[..<n]
      }
      let text = String(decoding: bytes, as: UTF8.self)
      let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
      let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
      continuation.resume(returning: (status, body))
    }.start()
  }
}

@Suite("Health endpoint for orchestrators", .timeLimit(.minutes(10)))
struct HealthEndpointTests {
  @Test("/readyz turns 503 before the first GOAWAY is sent; /livez stays 200; /drainz shows the open stream")
  func readinessBeforeGoAway() async throws {
    let started = Signal()
    let release = Signal()
    var router = echoRouter()
    // Open until the test has seen the whole drain: a handler that merely took a while could
    // end (and the drain with it) before a slow machine got to the checks below.
    router.unary("test/Long") { request, _ in
      started.fire()
      await release.wait()
      return request
    }
    var configuration = Server.Configuration(logger: .disabled, healthPort: 0)
    // The window in which readiness is off and no GOAWAY has left: one probe and one look at the
    // peer's socket must fit in it, with room for a machine far slower than a loaded one.
    configuration.shutdown.readinessPropagationDelay = .seconds(5)
    let server = Server(configuration: configuration, router: router)
    let run = Task { try await server.run() }
    let address = try await server.listeningAddress
    let health = try #require(server.healthAddress)
    #expect(await httpGet(port: health.port, "/readyz").status == 200)
    #expect(await httpGet(port: health.port, "/livez").status == 200)
    #expect(await httpGet(port: health.port, "/nope").status == 404)

    let peer = try RawPeer(port: address.port, receiveTimeoutSeconds: 60)  // outlasts the propagation delay
    peer.handshake()
    try await withClient(endpoints: [address]) { client in
      let call = Task { try await client.unary("test/Long", [UInt8]("x")) }
      await started.wait()
      let drainz = await httpGet(port: health.port, "/drainz")
      #expect(drainz.status == 200)
      #expect(drainz.body.contains("\"open_streams\":1"))
      #expect(drainz.body.contains("\"phase\":\"running\""))

      server.beginGracefulStop(deadline: .seconds(60))
      let ready = await httpGet(port: health.port, "/readyz")
      // Readiness is already off, and the raw peer has no GOAWAY yet: the propagation delay
      // holds it back so load balancers can notice first.
      let early = peer.readNow()
      #expect(ready.status == 503)
      #expect(!early.contains { $0.isGoAway })
      #expect(await httpGet(port: health.port, "/livez").status == 200)
      let (later, _) = await peer.read { $0.isGoAway }
      #expect(later.contains { $0.isGoAway })
      let draining = await httpGet(port: health.port, "/drainz")
      #expect(draining.body.contains("\"phase\":\"draining\""))
      release.fire()
      let reply = try await call.value
      #expect(reply.text == "x")
    }
    let report = await server.stopReport()
    #expect(report.isClean)
    try await run.value
  }
}
