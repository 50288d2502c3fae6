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
    let socket = try bindLoopback(listening: false)
    listener = socket.fd
    port = socket.port
    filler = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let filled = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        listen(listener, 0) == 0 && connect(filler, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
      }
    }
    guard filled else {
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

@Suite("A black-holed address: a TCP connect that never completes")
struct BlackHoleTests {
  @Test("the black hole holds a connect in SYN_SENT: a non-blocking connect is still in progress after 200 ms")
  func blackHoleHolds() async throws {
    let hole = try BlackHole()
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(hole.port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let result = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    #expect(result == -1 && errno == EINPROGRESS)
    // Waiting here is the point: a connect that completed or failed would show within it.
    var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
    #expect(poll(&poller, 1, 200) == 0, "the connect must neither complete nor fail")
  }

  @Test(
    "a connect to a black-holed endpoint times out after connectTimeout, and calls go to the live endpoint, none failed"
  )
  func connectTimeoutMovesOn() async throws {
    let hole = try BlackHole()
    try await withTestServer(echoRouter()) { _, live in
      let configuration = Client.Configuration(connectTimeout: .milliseconds(300))
      try await withClient(endpoints: [hole.endpoint, live], configuration: configuration) { client in
        // Not idempotent: a call never leaves for the black hole, so none may fail.
        for index in 0..<20 {
          let reply = try await client.unary("echo/Unary", Array("\(index)".utf8))
          #expect(reply.text == "\(index)")
        }
        // The black hole's connect gave up with a timeout, and it never carried a call.
        try await until("the black hole's connect timed out") {
          client.endpointStates.first { $0.endpoint == hole.endpoint }?.lastError != nil
        }
        let holeState = try #require(client.endpointStates.first { $0.endpoint == hole.endpoint })
        #expect(!holeState.ready)
        #expect(holeState.attempts == 0)
        #expect(holeState.lastError?.lowercased().contains("timed out") == true, "\(holeState.lastError ?? "")")
        #expect(client.statistics.failed == 0)
      }
    }
  }

  @Test(
    "a server that completes TCP but never answers the preface is left after connectTimeout too, and calls go to the live endpoint"
  )
  func handshakeTimeoutMovesOn() async throws {
    let mute = try RawServer()  // listens; nobody accepts, so no preface or SETTINGS ever comes
    try await withTestServer(echoRouter()) { _, live in
      let configuration = Client.Configuration(connectTimeout: .milliseconds(300))
      try await withClient(endpoints: [mute.endpoint, live], configuration: configuration) { client in
        for index in 0..<20 {
          let reply = try await client.unary("echo/Unary", Array("\(index)".utf8))
          #expect(reply.text == "\(index)")
        }
        try await until("the mute server's handshake timed out") {
          client.endpointStates.first { $0.endpoint == mute.endpoint }?.lastError != nil
        }
        let muteState = try #require(client.endpointStates.first { $0.endpoint == mute.endpoint })
        #expect(!muteState.ready)
        #expect(muteState.attempts == 0)
        #expect(muteState.lastError?.contains("handshake") == true, "lastError: \(muteState.lastError ?? "nil")")
        #expect(client.statistics.failed == 0)
      }
    }
  }

  @Test(
    "a call whose only server never answers the preface fails fast after connectTimeout, naming the handshake timeout")
  func handshakeTimeoutFailsFast() async throws {
    let mute = try RawServer()
    let configuration = Client.Configuration(connectTimeout: .milliseconds(300))
    try await withClient(endpoints: [mute.endpoint], configuration: configuration) { client in
      let error = await #expect(throws: RPCError.self) {
        try await client.unary("echo/Unary", [1], options: CallOptions(timeout: .seconds(60)))
      }
      #expect(error?.code == .unavailable, "\(String(describing: error))")
      #expect(error?.message.contains("handshake timeout") == true, "\(String(describing: error))")
    }
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

  @Test(
    "a call whose only endpoint is black-holed waits for the connect attempt, then fails fast: unavailable, timed out")
  func failFastAfterConnectTimeout() async throws {
    let hole = try BlackHole()
    let configuration = Client.Configuration(connectTimeout: .milliseconds(300))
    try await withClient(endpoints: [hole.endpoint], configuration: configuration) { client in
      let error = await #expect(throws: RPCError.self) {
        try await client.unary("echo/Unary", [1], options: CallOptions(timeout: .seconds(60)))
      }
      #expect(error?.code == .unavailable, "\(String(describing: error))")
      #expect(error?.message.lowercased().contains("timed out") == true, "\(String(describing: error))")
      #expect(client.statistics.failed == 1)
    }
  }

  @Test("a client closed while its connect never completes fails the waiting call at once and returns (40 rounds)")
  func closeDuringConnect() async throws {
    let hole = try BlackHole()
    for round in 0..<40 {
      let client = Client(endpoints: [hole.endpoint], configuration: Client.Configuration(connectTimeout: .seconds(60)))
      let call = Task {
        try await client.unary("test/Any", [1], options: CallOptions(timeout: .seconds(60), waitForReady: true))
      }
      // Half the rounds close once the call is parked; the others as it starts.
      if round % 2 == 1 { try await until("the call waits for the connection") { client.waitingCalls == 1 } }
      await client.close()
      let result = await call.result
      guard case .failure(let error as RPCError) = result else {
        Issue.record("round \(round): \(result)")
        continue
      }
      #expect(
        error.code == .unavailable || error.code == .cancelled, "round \(round): \(error.code) \(error.message)")
    }
  }
}
