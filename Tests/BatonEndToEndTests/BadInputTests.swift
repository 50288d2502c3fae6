import BatonClient
import BatonCore
import BatonServer
import Glibc
import Testing

/// Bad input gets a clear error on the wire, never a crash or a hang, and the server keeps
/// serving everyone else.
@Suite("Bad input and limits", .timeLimit(.minutes(10)))
struct BadInputTests {
  /// After each abuse, a well-behaved client must still get answers.
  func expectStillServing(_ address: Endpoint) async throws {
    try await withClient(endpoints: [address]) { client in
      let got12 = try await client.unary("echo/Unary", [UInt8]("still here")).text
      #expect(got12 == "still here")
    }
  }

  @Test("a peer that is not Baton gets GOAWAY(PROTOCOL_ERROR) and a close")
  func notBaton() async throws {
    try await withTestServer(echoRouter()) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
      let (frames, closed) = await peer.read()
      #expect(frames.contains { $0.goAwayCode == .protocolError })
      #expect(closed)
      try await expectStillServing(address)
    }
  }

  @Test("a preface with another version gets UNSUPPORTED_VERSION")
  func wrongVersion() async throws {
    try await withTestServer(echoRouter()) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.send(Preface.magic + [2])
      let (frames, closed) = await peer.read()
      #expect(frames.contains { $0.goAwayCode == .unsupportedVersion })
      #expect(closed)
    }
  }

  @Test("a frame larger than MAX_FRAME_SIZE is refused from its header alone")
  func oversizedFrame() async throws {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.connection.maxFrameSize = 1_024
    try await withTestServer(echoRouter(), configuration: configuration) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake()
      // A header claiming 1 MiB, and no payload: the server must not wait for it.
      peer.send([0x10, 0x00, 0x00, FrameType.data, 0, 0, 0, 0, 1])
      let (frames, closed) = await peer.read()
      #expect(frames.contains { $0.goAwayCode == .frameSizeError })
      #expect(closed)
      try await expectStillServing(address)
    }
  }

  @Test("an unknown frame type is a connection PROTOCOL_ERROR")
  func unknownType() async throws {
    try await withTestServer(echoRouter()) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake()
      peer.send([0, 0, 0, 0x42, 0, 0, 0, 0, 0])
      let (frames, closed) = await peer.read()
      #expect(frames.contains { $0.goAwayCode == .protocolError })
      #expect(closed)
    }
  }

  @Test("DATA on a stream never opened is a connection PROTOCOL_ERROR")
  func dataOnIdleStream() async throws {
    try await withTestServer(echoRouter()) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake()
      peer.send(.data(streamID: 9, payload: [1], endMessage: true, endStream: true))
      let (frames, closed) = await peer.read()
      #expect(frames.contains { $0.goAwayCode == .protocolError })
      #expect(closed)
    }
  }

  @Test("a stream id that goes backwards is a connection PROTOCOL_ERROR naming the last good id")
  func backwardsStreamID() async throws {
    try await withTestServer(echoRouter()) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake()
      peer.send(
        .open(streamID: 5, RequestHead(method: "echo/Unary"), endStream: false),
        .data(streamID: 5, payload: [1], endMessage: true, endStream: true))
      _ = await peer.read { $0.isTrailers }
      peer.send(.open(streamID: 3, RequestHead(method: "echo/Unary"), endStream: false))
      let (frames, closed) = await peer.read()
      let goAway = try #require(frames.first { $0.isGoAway })
      #expect(goAway.goAwayCode == .protocolError)
      #expect(goAway.goAwayLastStreamID == 5)
      #expect(closed)
    }
  }

  @Test("a malformed OPEN resets only its stream; the next stream is served")
  func malformedOpen() async throws {
    try await withTestServer(echoRouter()) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake()
      // OPEN 1 whose method length runs past the payload.
      peer.send([0, 0, 2, FrameType.open, 0, 0, 0, 0, 1, 0x00, 0x09])
      peer.send(
        .open(streamID: 3, RequestHead(method: "echo/Unary"), endStream: false),
        .data(streamID: 3, payload: [7], endMessage: true, endStream: true))
      let (frames, _) = await peer.read { $0.isTrailers }
      #expect(frames.contains { $0.resetCode(stream: 1) == .protocolError })
      #expect(frames.contains { if case .data(3, [7], true, _) = $0 { true } else { false } })
    }
  }

  @Test("DATA beyond the stream window resets that stream with FLOW_CONTROL_ERROR")
  func streamWindowExceeded() async throws {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.connection.initialWindowSize = 1_024
    try await withTestServer(echoRouter(), configuration: configuration) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake()
      peer.send(
        .open(streamID: 1, RequestHead(method: "echo/Collect"), endStream: false),
        .data(streamID: 1, payload: [UInt8](repeating: 1, count: 2_000), endMessage: true, endStream: false))
      let (frames, _) = await peer.read { $0.resetCode(stream: 1) != nil }
      #expect(frames.last?.resetCode(stream: 1) == .flowControlError)
    }
  }

  @Test("DATA beyond the connection window is a connection FLOW_CONTROL_ERROR")
  func connectionWindowExceeded() async throws {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.connection.connectionWindowSize = 1_500
    configuration.connection.initialWindowSize = 1_000
    try await withTestServer(echoRouter(), configuration: configuration) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake()
      peer.send(
        .open(streamID: 1, RequestHead(method: "echo/Collect"), endStream: false),
        .open(streamID: 3, RequestHead(method: "echo/Collect"), endStream: false),
        // Whole messages, handled in one read before any handler can consume them (fragments
        // would give their credit back as they arrive).
        .data(streamID: 1, payload: [UInt8](repeating: 1, count: 900), endMessage: true, endStream: false),
        .data(streamID: 3, payload: [UInt8](repeating: 1, count: 900), endMessage: true, endStream: false))
      let (frames, closed) = await peer.read()
      #expect(frames.contains { $0.goAwayCode == .flowControlError })
      #expect(closed)
    }
  }

  @Test("metadata over MAX_METADATA_SIZE resets the stream with MESSAGE_TOO_LARGE")
  func metadataTooLarge() async throws {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.connection.maxMetadataSize = 64
    try await withTestServer(echoRouter(), configuration: configuration) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake()
      let big: Metadata = ["big": String(repeating: "x", count: 200)]
      peer.send(.open(streamID: 1, RequestHead(method: "echo/Unary", metadata: big), endStream: false))
      let (frames, _) = await peer.read { $0.resetCode(stream: 1) != nil }
      #expect(frames.last?.resetCode(stream: 1) == .messageTooLarge)
      // The client refuses to send such metadata at all, with a clear error.
      try await withClient(endpoints: [address]) { client in
        let error = await #expect(throws: RPCError.self) {
          try await client.unary("echo/Unary", [], options: CallOptions(metadata: big))
        }
        #expect(error?.code == .resourceExhausted)
      }
    }
  }

  @Test("a message over MAX_MESSAGE_SIZE resets the stream; the client refuses to send one")
  func messageTooLarge() async throws {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.connection.maxMessageSize = 100
    try await withTestServer(echoRouter(), configuration: configuration) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake()
      peer.send(
        .open(streamID: 1, RequestHead(method: "echo/Unary"), endStream: false),
        .data(streamID: 1, payload: [UInt8](repeating: 1, count: 60), endMessage: false, endStream: false),
        .data(streamID: 1, payload: [UInt8](repeating: 1, count: 60), endMessage: true, endStream: true))
      let (frames, _) = await peer.read { $0.resetCode(stream: 1) != nil }
      #expect(frames.last?.resetCode(stream: 1) == .messageTooLarge)
      try await withClient(endpoints: [address]) { client in
        let error = await #expect(throws: RPCError.self) {
          try await client.unary("echo/Unary", [UInt8](repeating: 0, count: 101))
        }
        #expect(error?.code == .resourceExhausted)
        let got186 = try await client.unary("echo/Unary", [UInt8](repeating: 0, count: 100)).count
        #expect(got186 == 100)
      }
    }
  }

  @Test("an OPEN beyond MAX_CONCURRENT_STREAMS is refused as not processed")
  func tooManyStreams() async throws {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.connection.maxConcurrentStreams = 2
    try await withTestServer(echoRouter(), configuration: configuration) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake()
      for id: UInt32 in [1, 3, 5] {
        peer.send(
          .open(streamID: id, RequestHead(method: "echo/Sleep"), endStream: false),
          .data(streamID: id, payload: [UInt8]("300"), endMessage: true, endStream: true))
      }
      let (frames, _) = await peer.read { $0.resetCode(stream: 5) != nil }
      #expect(frames.last?.resetCode(stream: 5) == .refusedStream)
    }
  }

  @Test("the client queues calls beyond the server's MAX_CONCURRENT_STREAMS instead of failing them")
  func clientQueuesBeyondStreamLimit() async throws {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.connection.maxConcurrentStreams = 4
    try await withTestServer(echoRouter(), configuration: configuration) { _, address in
      try await withClient(endpoints: [address]) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          for _ in 0..<20 {
            group.addTask {
              let reply = try await client.unary("echo/Sleep", [UInt8]("20")).text
              #expect(reply == "20")
            }
          }
          try await group.waitForAll()
        }
        #expect(client.statistics.failed == 0)
      }
    }
  }

  @Test("a connection beyond maxConnections gets GOAWAY with last stream 0 and is closed")
  func tooManyConnections() async throws {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.maxConnections = 2
    try await withTestServer(echoRouter(), configuration: configuration) { server, address in
      try await expectConnectionLimit(server: server, port: address.port)
    }
  }

  // A plain function, not a closure: works around a compiler crash (SendNonSendable pass) in 6.3.
  func expectConnectionLimit(server: Server, port: Int) async throws {
    let first = try RawPeer(port: port)
    first.handshake()
    let second = try RawPeer(port: port)
    second.handshake()
    // Both are served (each answers a PING), so both count.
    first.send(.ping(ack: false, payload: 1))
    _ = await first.read { $0.isPingAck(1) }
    second.send(.ping(ack: false, payload: 2))
    _ = await second.read { $0.isPingAck(2) }
    let third = try RawPeer(port: port)
    third.handshake()
    let (frames, closed) = await third.read()
    let goAway = try #require(frames.first { $0.isGoAway })
    #expect(goAway.goAwayLastStreamID == 0)
    #expect(closed)
    let served = server.progress.connections.count
    #expect(served == 2)
  }

  @Test("a peer that vanishes mid-frame costs nothing but its own connection", arguments: 0..<20)
  func vanishMidFrame(round: Int) async throws {
    try await withTestServer(echoRouter()) { _, address in
      do {
        let peer = try RawPeer(port: address.port)
        peer.handshake()
        var bytes: [UInt8] = []
        FrameEncoder.encode(.open(streamID: 1, RequestHead(method: "echo/Unary"), endStream: false), into: &bytes)
        FrameEncoder.encode(
          .data(streamID: 1, payload: [UInt8](repeating: 9, count: 300), endMessage: true, endStream: true),
          into: &bytes)
        peer.send(Array(bytes.prefix(bytes.count - 1 - round * 7)))
      }  // closed here, mid-frame
      try await expectStillServing(address)
    }
  }

  @Test("a peer that sends requests but never reads replies is stopped from growing server memory")
  func bufferedBytesLimit() async throws {
    var configuration = Server.Configuration(logger: .disabled)
    configuration.maxBufferedBytesPerConnection = 64 << 10
    configuration.connection.connectionWindowSize = 64 << 10
    try await withTestServer(echoRouter(), configuration: configuration) { _, address in
      let peer = try RawPeer(port: address.port)
      var small = Int32(16 << 10)
      setsockopt(peer.fd, SOL_SOCKET, SO_RCVBUF, &small, 4)
      setsockopt(peer.fd, SOL_SOCKET, SO_SNDBUF, &small, 4)
      // A small connection window: replies stall on flow control, so what piles up is what
      // the limit is for (statuses and refusals the peer never reads).
      peer.handshake(settings: [.init(id: SettingID.connectionWindowSize, value: 64 << 10)])
      let flags = fcntl(peer.fd, F_GETFL)
      _ = fcntl(peer.fd, F_SETFL, flags | O_NONBLOCK)
      // Thousands of small unary calls, replies never read. Once the server stops reading, our
      // sends hit EAGAIN for good; if it kept reading (and buffering replies) they never would.
      var sent = 0
      var id: UInt32 = 1
      var blockedSince: ContinuousClock.Instant?
      let start = ContinuousClock.now
      while ContinuousClock.now - start < .seconds(20) {
        var bytes: [UInt8] = []
        FrameEncoder.encode(.open(streamID: id, RequestHead(method: "echo/Unary"), endStream: false), into: &bytes)
        FrameEncoder.encode(
          .data(streamID: id, payload: [UInt8](repeating: 1, count: 200), endMessage: true, endStream: true),
          into: &bytes)
        let n = bytes.withUnsafeBytes { send(peer.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n == bytes.count {
          sent += n
          id += 2
          blockedSince = nil
          if id > 2_000_000 { break }
          continue
        }
        if n > 0 { break }  // a partial frame: stop here, the server is not reading any more
        let now = ContinuousClock.now
        if let since = blockedSince, now - since > .milliseconds(500) { break }
        if blockedSince == nil { blockedSince = now }
        await Task.yield()
      }
      #expect(sent < 64 << 20, "the server kept reading \(sent) bytes of requests whose replies were never read")
      try await expectStillServing(address)
    }
  }
}
