import BatonClient
import BatonCore
import BatonServer
import Foundation
import Glibc
import Testing

/// A loopback port where a TCP connect never completes, as to the address of a pod that is gone
/// and whose packets are dropped: a listener with a backlog of 0, whose one queue place is taken
/// by a connection nobody accepts. The kernel then drops every further SYN, so a client's
/// connect stays in SYN_SENT until it gives up, and no byte is ever exchanged.
final class BlackHole: Sendable {
  private let listener: Int32
  private let filler: Int32
  let port: Int
  var endpoint: Endpoint { Endpoint(host: "127.0.0.1", port: port) }

  init() throws {
    (listener, port) = try bindLoopback(listening: false)
    filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard listen(listener, 0) == 0, connectLoopback(filler, port: port) == 0 else {
      let code = errno
      close(listener)
      close(filler)
      throw RawPeerError.connect(code)
    }
  }

  deinit {
    close(filler)
    close(listener)
  }
}

/// The client's `connectTimeout` against addresses that never become ready: a black hole (the
/// TCP connect never completes) and a mute server (TCP completes, the preface never comes).
@Suite("Addresses that never answer: a black hole, a mute server")
struct BlackHoleTests {
  @Test("the black hole holds a connect in SYN_SENT: a non-blocking connect is still in progress after 200 ms")
  func blackHoleHolds() async throws {
    let hole = try BlackHole()
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    defer { close(fd) }
    #expect(connectLoopback(fd, port: hole.port) == -1 && errno == EINPROGRESS)
    // Waiting here is the point: a connect that completed or failed would show within it.
    var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
    #expect(poll(&poller, 1, 200) == 0, "the connect must neither complete nor fail")
  }

  /// Beside a live server, an address that never becomes ready: 20 calls (not idempotent: none
  /// may leave for it) all succeed, and once its attempt has given up after `connectTimeout`
  /// its state names `reason`, with no attempt sent there.
  private func leftAfterConnectTimeout(_ dead: Endpoint, reason: String) async throws {
    try await withTestServer(echoRouter()) { _, live in
      let configuration = Client.Configuration(connectTimeout: .milliseconds(300))
      try await withClient(endpoints: [dead, live], configuration: configuration) { client in
        for index in 0..<20 {
          let reply = try await client.unary("echo/Unary", Array("\(index)".utf8))
          #expect(reply.text == "\(index)")
        }
        try await until("the attempt gave up") { client.endpointStates.first { $0.endpoint == dead }?.lastError != nil }
        let state = try #require(client.endpointStates.first { $0.endpoint == dead })
        #expect(!state.ready)
        #expect(state.attempts == 0)
        #expect(state.lastError?.lowercased().contains(reason) == true, "last error: \(state.lastError ?? "nil")")
        #expect(client.statistics.failed == 0)
      }
    }
  }

  @Test(
    "a black-holed address is left after connectTimeout, its connect timed out; calls go to the live one, none failed")
  func blackHoleLeft() async throws {
    let hole = try BlackHole()
    try await leftAfterConnectTimeout(hole.endpoint, reason: "timed out")
  }

  @Test(
    "a server that completes TCP but never answers the preface is left after connectTimeout too, naming the handshake")
  func muteServerLeft() async throws {
    let mute = try RawServer()  // listens; nobody accepts, so no preface or SETTINGS ever comes
    try await leftAfterConnectTimeout(mute.endpoint, reason: "handshake timeout")
  }

  /// A call whose only endpoint is `dead`: it waits for the connect attempt (300 ms), then fails
  /// fast with `unavailable` naming `reason`, long before its 60 s deadline.
  private func failsFast(_ dead: Endpoint, reason: String) async throws {
    let configuration = Client.Configuration(connectTimeout: .milliseconds(300))
    try await withClient(endpoints: [dead], configuration: configuration) { client in
      let error = await #expect(throws: RPCError.self) {
        try await client.unary("echo/Unary", [1], options: CallOptions(timeout: .seconds(60)))
      }
      #expect(error?.code == .unavailable, "\(String(describing: error))")
      #expect(error?.message.lowercased().contains(reason) == true, "\(String(describing: error))")
      #expect(client.statistics.failed == 1)
    }
  }

  @Test(
    "a call whose only endpoint is black-holed waits for the connect attempt, then fails fast: unavailable, timed out")
  func blackHoleFailsFast() async throws {
    let hole = try BlackHole()
    try await failsFast(hole.endpoint, reason: "timed out")
  }

  @Test("a call whose only server never answers the preface fails fast after connectTimeout, naming the handshake")
  func muteServerFailsFast() async throws {
    let mute = try RawServer()
    try await failsFast(mute.endpoint, reason: "handshake timeout")
  }

  @Test("a call whose only endpoint is black-holed fails with its deadline, not later and not with a connect error")
  func deadlineWhileConnecting() async throws {
    let hole = try BlackHole()
    // A connect timeout far beyond the call's deadline: only the deadline can end the call.
    let configuration = Client.Configuration(connectTimeout: .seconds(60))
    try await withClient(endpoints: [hole.endpoint], configuration: configuration) { client in
      let started = ContinuousClock.now
      let error = await #expect(throws: RPCError.self) {
        try await client.unary(
          "echo/Unary", [1], options: CallOptions(timeout: .milliseconds(300), waitForReady: true))
      }
      #expect(error?.code == .deadlineExceeded, "\(String(describing: error))")
      // A bound for a loaded machine, far below the connect timeout: not a measurement.
      #expect(ContinuousClock.now - started < .seconds(30))
    }
  }

  @Test("a client closed while its connect never completes fails the waiting call at once and returns (40 rounds)")
  func closeDuringConnect() async throws {
    let hole = try BlackHole()
    try await closeWhileConnecting(to: hole.endpoint, rounds: 40)
  }
}
