import BatonCore
import Testing

/// ``ConnectionCore`` as a pure value: bytes in, events and bytes out. Handshake, calls, stream ids
/// and the stream rules of PROTOCOL.md sections 3, 6 and 7. Flow control and GOAWAY have their own
/// files.
@Suite("ConnectionCore")
struct ConnectionCoreTests {
  // MARK: - Handshake

  @Test("each side writes its preface and SETTINGS (its own limits) at once, before reading anything")
  func firstBytes() {
    let settings = ConnectionSettings(maxConcurrentStreams: 100, maxMessageSize: 1000)
    var server = Driven(.server, settings: settings)
    #expect(Array(server.core.outbound.flattened.prefix(8)) == Preface.bytes)
    #expect(server.written() == [settings.frame])
    #expect(server.core.phase == .awaitingPreface)
    var client = Driven(.client)
    #expect(client.written() == [ConnectionSettings.defaults.frame])
    #expect(client.core.phase == .awaitingPreface)
  }

  @Test("after the preface and SETTINGS exchange both sides are ready with the peer's settings")
  func handshake() {
    let serverSettings = ConnectionSettings(maxConcurrentStreams: 100, maxMessageSize: 1000)
    let clientSettings = ConnectionSettings(initialWindowSize: 4096)
    let pair = Pair(client: clientSettings, server: serverSettings)  // expects .ready on both
    #expect(pair.client.core.phase == .active)
    #expect(pair.server.core.phase == .active)
    #expect(pair.client.core.peerSettings == serverSettings)
    #expect(pair.server.core.peerSettings == clientSettings)
    #expect(pair.client.core.localSettings == clientSettings)
    #expect(pair.client.core.canOpenStream)
    #expect(!pair.server.core.canOpenStream, "only the client opens streams")
  }

  @Test("the handshake completes when every byte arrives on its own, and .ready comes exactly once")
  func handshakeByteByByte() {
    let serverSettings = ConnectionSettings(maxConcurrentStreams: 3)
    var server = Driven(.server, settings: serverSettings)
    var client = Driven(.client)
    let serverBytes = server.takeOutbound().bytes
    let clientBytes = client.takeOutbound().bytes
    #expect(client.receiveByteByByte(serverBytes) == [.ready(serverSettings)])
    #expect(server.receiveByteByByte(clientBytes) == [.ready(.defaults)])
    #expect(client.unusedInput == 0)
    #expect(client.core.canOpenStream)
  }

  @Test("receive uses whole frames only and reports the bytes it used; the owner keeps the rest")
  func receiveReportsConsumed() {
    var core = ConnectionCore(role: .server)
    let settings = encode(ConnectionSettings.defaults.frame)
    let ping = encode(.ping(ack: false, payload: 9))
    let input = Preface.bytes + settings + ping.prefix(5)
    var events: [ConnectionEvent] = []
    let used = input.withUnsafeBytes { core.receive($0, into: &events) }
    #expect(used == Preface.length + settings.count)
    #expect(events == [.ready(.defaults)])
  }

  @Test("the client opens no stream before the server's SETTINGS have arrived")
  func notReadyBeforeSettings() {
    var client = Driven(.client)
    _ = client.written()
    #expect(!client.core.canOpenStream)
    #expect(throws: ConnectionCore.OpenError.notReady) { try client.core.open() }
    client.receive(Preface.bytes)
    #expect(client.core.phase == .awaitingSettings)
    #expect(throws: ConnectionCore.OpenError.notReady) { try client.core.open() }
    #expect(client.written().isEmpty, "nothing was written for the refused opens")
  }

  @Test(
    "a peer that is not Baton gets a connection PROTOCOL_ERROR: a GOAWAY after this side's own SETTINGS, then nothing")
  func badPreface() {
    var server = Driven(.server)
    let events = server.receive(Array("GET / HTTP/1.1\r\n".utf8))
    #expect(events.seen == [.connectionError(.protocolError)])
    #expect(server.core.phase == .closed)
    let frames = server.written()
    #expect(frames.first == ConnectionSettings.defaults.frame)
    #expect(frames.goAways == [StreamCode(0, .protocolError)])
    #expect(frames.count == 2)
  }

  @Test("preface version 2 is a connection UNSUPPORTED_VERSION error")
  func version2() {
    var client = Driven(.client)
    let events = client.receive(Preface.magic + [2])
    #expect(events.seen == [.connectionError(.unsupportedVersion)])
    #expect(client.written().goAways == [StreamCode(0, .unsupportedVersion)])
  }

  @Test(
    "a first frame other than SETTINGS is a connection PROTOCOL_ERROR",
    arguments: [
      Frame.ping(ack: false, payload: 1), .windowUpdate(streamID: 0, increment: 1),
      .goAway(lastStreamID: 0, .noError, debug: ""), openFrame(1), dataFrame(1, [1]), .reset(streamID: 1, .cancel),
    ])
  func firstFrameNotSettings(_ frame: Frame) {
    var server = Driven(.server)
    _ = server.written()
    let events = server.receive(Preface.bytes + encode(frame))
    #expect(events.seen == [.connectionError(.protocolError)])
    let frames = server.written()
    #expect(frames.goAways == [StreamCode(0, .protocolError)])
    #expect(frames.count == 1, "a connection that failed answers nothing else")
  }

  @Test("a malformed OPEN as the first frame is a connection PROTOCOL_ERROR, not a stream error")
  func malformedOpenAsFirstFrame() throws {
    let vector = try #require(try Vectors.frames().invalid.first { $0.name == "open_empty_method" })
    var server = Driven(.server)
    _ = server.written()
    let events = server.receive(Preface.bytes + [UInt8](hex: vector.hex))
    #expect(events.seen == [.connectionError(.protocolError)])
    #expect(server.core.phase == .closed)
  }

  @Test("a second SETTINGS is a connection PROTOCOL_ERROR")
  func secondSettings() {
    var server = Driven.ready(.server)
    let events = server.receive(.settings([]))
    #expect(events.seen == [.connectionError(.protocolError)])
    #expect(server.written().goAways == [StreamCode(0, .protocolError)])
    #expect(server.core.phase == .closed)
  }

  @Test("after a connection error nothing more is read, answered or sent, and every stream is gone")
  func afterConnectionError() {
    var client = Driven.ready(.client)
    _ = try? client.core.open()
    _ = client.written()
    client.receive(.settings([]))  // connection error
    _ = client.written()
    #expect(client.core.openStreamCount == 0)
    #expect(client.receive(.ping(ack: false, payload: 5), .goAway(lastStreamID: 0, .noError, debug: "")).isEmpty)
    client.core.sendPing(1)
    client.core.sendGoAway(lastStreamID: 0)
    #expect(client.written().isEmpty)
    #expect(throws: ConnectionCore.OpenError.goingAway) { try client.core.open() }
    #expect(!client.core.canOpenStream)
  }

  @Test("abort sends GOAWAY with this side's code and last id, and ends the connection")
  func abort() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1), openFrame(3))
    _ = server.written()
    var events: [ConnectionEvent] = []
    server.core.abort(.enhanceYourCalm, reason: "too many pings", into: &events)
    #expect(events.seen == [.connectionError(.enhanceYourCalm)])
    #expect(server.written().goAways == [StreamCode(3, .enhanceYourCalm)])
    #expect(server.core.phase == .closed)
    #expect(server.core.openStreamCount == 0)
  }

  // MARK: - Calls

  @Test(
    "a unary call: the server sees opened, message, endOfInput; the client sees headers, message, trailers; the bytes are PROTOCOL.md's worked example"
  )
  func unaryCall() throws {
    let sequences = try Vectors.frames().sequences
    let request = try #require(sequences.first { $0.name == "unary_call_client_to_server" })
    let response = try #require(sequences.first { $0.name == "unary_call_server_to_client" })
    var pair = Pair()
    let head = RequestHead(method: "echo.Echo/Unary", timeoutMicroseconds: 1_000_000, metadata: ["trace-id": "abc"])
    let id = try pair.client.core.openStream(head, endStream: false)
    #expect(id == 1)
    let sent = pair.client.core.send(id, Array("hi".utf8), endStream: true)
    #expect(sent.outcome == .written)
    #expect(sent.events.isEmpty)
    #expect(pair.client.core.outbound.flattened.hex == request.hex)

    #expect(
      pair.clientToServer() == [
        .opened(streamID: 1, head, endStream: false), .message(streamID: 1, Array("hi".utf8)), .endOfInput(streamID: 1),
      ])

    pair.server.core.sendHeaders(streamID: 1, ["server": "baton"])
    #expect(pair.server.core.send(1, Array("hi".utf8)).outcome == .written)
    #expect(pair.server.core.sendTrailers(streamID: 1, .ok) == true)
    #expect(pair.server.core.outbound.flattened.hex == response.hex)

    #expect(
      pair.serverToClient() == [
        .headers(streamID: 1, ["server": "baton"]), .message(streamID: 1, Array("hi".utf8)),
        .trailers(streamID: 1, .ok),
      ])
    #expect(pair.client.core.openStreamCount == 0)
    #expect(pair.server.core.openStreamCount == 0)
    #expect(pair.server.core.sendTrailers(streamID: 1, .ok) == false, "the stream already ended")
    #expect(pair.client.core.resetStream(streamID: 1, .cancel) == false)
    // 2 bytes against 1 MiB and 16 MiB windows: no WINDOW_UPDATE is due (PROTOCOL.md 7.4).
    let rest = pair.pump()
    #expect(rest.client.isEmpty && rest.server.isEmpty)
  }

  @Test("a bidirectional call: messages flow both ways, sendEnd half-closes, TRAILERS ends the call")
  func bidirectionalCall() throws {
    var pair = Pair()
    let id = try pair.client.core.open()
    #expect(pair.client.core.send(id, [1]).outcome == .written)
    #expect(pair.clientToServer().seen == [.opened(1, method: testMethod, endStream: false), .message(1, [1])])
    #expect(pair.server.core.send(id, [2]).outcome == .written)
    #expect(pair.server.core.send(id, []).outcome == .written)
    #expect(pair.serverToClient().seen == [.message(1, [2]), .message(1, [])])
    #expect(pair.client.core.send(id, [3]).outcome == .written)
    pair.client.core.sendEnd(streamID: id)
    #expect(pair.clientToServer().seen == [.message(1, [3]), .endOfInput(1)])
    #expect(pair.client.core.send(id, [4]).outcome == .streamClosed, "the client already ended its side")
    pair.client.core.sendEnd(streamID: id)
    #expect(pair.client.written().isEmpty, "a second sendEnd writes nothing")
    #expect(pair.server.core.send(id, [5]).outcome == .written, "the server may still send")
    #expect(pair.server.core.sendTrailers(streamID: id, Trailers(status: 5, message: "gone")) == true)
    #expect(pair.serverToClient().seen == [.message(1, [5]), .trailers(1, status: 5)])
    #expect(pair.server.core.send(id, [6]).outcome == .streamClosed)
  }

  @Test("OPEN with END_STREAM carries no request: the server sees it in .opened and gets no endOfInput")
  func openWithEndStream() throws {
    var pair = Pair()
    let id = try pair.client.core.open(endStream: true)
    #expect(pair.client.core.send(id, [1]).outcome == .streamClosed)
    #expect(pair.clientToServer().seen == [.opened(1, method: testMethod, endStream: true)])
    #expect(pair.client.wrote.last == openFrame(1, endStream: true))
    #expect(pair.server.core.sendTrailers(streamID: id, .ok) == true)
    #expect(pair.serverToClient().seen == [.trailers(1, status: 0)])
  }

  @Test("a trailers-only response ends the call")
  func trailersOnly() throws {
    var pair = Pair()
    let id = try pair.client.core.open()
    pair.clientToServer()
    #expect(pair.server.core.sendTrailers(streamID: id, Trailers(status: 12, message: "no such method")) == true)
    let events = pair.serverToClient()
    #expect(events == [.trailers(streamID: 1, Trailers(status: 12, message: "no such method"))])
    #expect(!pair.client.core.isOpen(id))
    #expect(pair.client.core.send(id, [1]).outcome == .streamClosed, "after TRAILERS the client stops sending")
  }

  @Test("frames of interleaved streams reach the right stream")
  func interleavedStreams() throws {
    var pair = Pair()
    let one = try pair.client.core.open()
    let three = try pair.client.core.open()
    #expect([one, three] == [1, 3])
    #expect(pair.client.core.send(three, [3]).outcome == .written)
    #expect(pair.client.core.send(one, [1], endStream: true).outcome == .written)
    #expect(
      pair.clientToServer().seen == [
        .opened(1, method: testMethod, endStream: false), .opened(3, method: testMethod, endStream: false),
        .message(3, [3]), .message(1, [1]), .endOfInput(1),
      ])
    #expect(Set(pair.server.core.openStreamIDs) == [1, 3])
    #expect(pair.server.core.sendTrailers(streamID: three, .ok) == true)
    #expect(pair.serverToClient().seen == [.trailers(3, status: 0)])
    #expect(pair.client.core.openStreamIDs == [1])
  }

  @Test("a message fragmented over several DATA frames is delivered once, whole")
  func reassembly() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    #expect(server.receive(dataFrame(1, [1, 2], endMessage: false)).isEmpty)
    #expect(server.receive(dataFrame(1, [], endMessage: false)).isEmpty)
    #expect(server.receive(dataFrame(1, [3], endMessage: false)).isEmpty)
    #expect(server.receive(dataFrame(1, [4], endMessage: true)).seen == [.message(1, [1, 2, 3, 4])])
    #expect(
      server.receive(dataFrame(1, [5], endMessage: true, endStream: true)).seen == [.message(1, [5]), .endOfInput(1)])
    #expect(server.written().isEmpty)
  }

  @Test(
    "an empty message is one zero-length DATA with END_MESSAGE; a zero-length END_STREAM alone is a pure half-close")
  func emptyMessageAndHalfClose() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    #expect(server.receive(dataFrame(1, [])).seen == [.message(1, [])])
    #expect(server.receive(dataFrame(1, [], endMessage: false, endStream: true)).seen == [.endOfInput(1)])
    #expect(server.written().isEmpty)
  }

  @Test("a zero-length DATA with no flags has no effect: a later pure half-close still works")
  func emptyDataWithoutFlags() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    #expect(server.receive(dataFrame(1, [], endMessage: false)).isEmpty)
    let events = server.receive(dataFrame(1, [], endMessage: false, endStream: true))
    #expect(events.seen == [.endOfInput(1)])
    #expect(server.written().resets.isEmpty)
  }

  @Test("sendEnd is for clients: a server, which ends with TRAILERS, writes no END_STREAM")
  func serverSendEnd() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    server.core.sendEnd(streamID: 1)
    let frames = server.written()
    #expect(!frames.dataFrames.contains { $0.endStream })
  }

  // MARK: - Stream ids

  @Test("the client numbers its streams 1, 3, 5, …")
  func clientIDs() throws {
    var client = Driven.ready(.client)
    #expect(client.core.nextStreamID == 1)
    #expect(try client.core.open() == 1)
    #expect(try client.core.open() == 3)
    #expect(try client.core.open() == 5)
    #expect(client.core.nextStreamID == 7)
    #expect(client.written().map(\.streamID) == [1, 3, 5])
  }

  @Test(
    "an OPEN whose id is not above the highest opened id is a connection PROTOCOL_ERROR naming that highest id",
    arguments: [UInt32(1), 3])
  func idWentBackwards(_ id: UInt32) {
    var server = Driven.ready(.server)
    #expect(server.receive(openFrame(3)).seen == [.opened(3, method: testMethod, endStream: false)])
    #expect(server.core.highestPeerStreamID == 3)
    #expect(server.receive(openFrame(id)).seen == [.connectionError(.protocolError)])
    #expect(server.written().goAways == [StreamCode(3, .protocolError)])
  }

  @Test("the server tracks the highest opened id even for skipped ids")
  func skippedIDs() {
    var server = Driven.ready(.server)
    server.receive(openFrame(7))
    #expect(server.core.highestPeerStreamID == 7)
    // 1, 3 and 5 were skipped: they are closed, so frames on them are ignored, not errors.
    #expect(
      server.receive(dataFrame(3, [1]), .reset(streamID: 5, .cancel), .windowUpdate(streamID: 1, increment: 1)).isEmpty)
    #expect(server.written().isEmpty)
  }

  @Test(
    "a frame other than OPEN on a never-opened (idle) stream is a connection PROTOCOL_ERROR at the server",
    arguments: [dataFrame(5, [1]), .reset(streamID: 5, .cancel), .windowUpdate(streamID: 5, increment: 1)])
  func idleStreamAtServer(_ frame: Frame) {
    var server = Driven.ready(.server)
    server.receive(openFrame(3))
    #expect(server.receive(frame).seen == [.connectionError(.protocolError)])
    #expect(server.written().goAways == [StreamCode(3, .protocolError)])
  }

  @Test(
    "a frame on a stream the client never opened is a connection PROTOCOL_ERROR at the client",
    arguments: [
      dataFrame(3, [1]), .headers(streamID: 3, [:]), .trailers(streamID: 3, .ok), .reset(streamID: 3, .cancel),
      .windowUpdate(streamID: 3, increment: 1),
    ])
  func idleStreamAtClient(_ frame: Frame) throws {
    var client = Driven.ready(.client)
    _ = try client.core.open()
    _ = client.written()
    #expect(client.receive(frame).seen == [.connectionError(.protocolError)])
    #expect(client.written().goAways == [StreamCode(0, .protocolError)], "a client's GOAWAY names last id 0")
    #expect(client.core.openStreamCount == 0)
  }

  @Test(
    "HEADERS or TRAILERS from a client on a never-opened stream is a connection PROTOCOL_ERROR",
    arguments: [Frame.headers(streamID: 9, [:]), .trailers(streamID: 9, .ok)])
  func idleHeadersAtServer(_ frame: Frame) {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    let events = server.receive(frame)
    #expect(events.seen == [.connectionError(.protocolError)])
  }

  @Test("an OPEN received by a client is a connection PROTOCOL_ERROR")
  func openAtClient() {
    var client = Driven.ready(.client)
    #expect(client.receive(openFrame(1)).seen == [.connectionError(.protocolError)])
    #expect(client.written().goAways == [StreamCode(0, .protocolError)])
  }

  // MARK: - Concurrency and malformed OPEN

  @Test("an OPEN beyond MAX_CONCURRENT_STREAMS is answered RESET REFUSED_STREAM and never reported")
  func refusedForConcurrency() {
    var server = Driven.ready(.server, settings: ConnectionSettings(maxConcurrentStreams: 2))
    let events = server.receive(openFrame(1), openFrame(3), openFrame(5))
    #expect(
      events.seen == [
        .opened(1, method: testMethod, endStream: false), .opened(3, method: testMethod, endStream: false),
      ])
    #expect(server.written().resets == [StreamCode(5, .refusedStream)])
    #expect(!server.core.isOpen(5))
    // Frames of the refused stream still in flight are dropped quietly.
    #expect(server.receive(dataFrame(5, [1], endStream: true)).isEmpty)
    // Once a stream ends there is room again.
    #expect(server.core.sendTrailers(streamID: 1, .ok) == true)
    #expect(server.receive(openFrame(7)).seen == [.opened(7, method: testMethod, endStream: false)])
    #expect(server.written().resets.isEmpty)
  }

  @Test("a stream the client half-closed still counts against MAX_CONCURRENT_STREAMS")
  func halfClosedCounts() {
    var server = Driven.ready(.server, settings: ConnectionSettings(maxConcurrentStreams: 1))
    server.receive(openFrame(1, endStream: true))
    #expect(server.receive(openFrame(3)).isEmpty)
    #expect(server.written().resets == [StreamCode(3, .refusedStream)])
  }

  @Test("MAX_CONCURRENT_STREAMS 0 refuses every OPEN")
  func zeroConcurrency() {
    var server = Driven.ready(.server, settings: ConnectionSettings(maxConcurrentStreams: 0))
    #expect(server.receive(openFrame(1)).isEmpty)
    #expect(server.written().resets == [StreamCode(1, .refusedStream)])
  }

  @Test("a malformed OPEN gets RESET PROTOCOL_ERROR on its stream; its id counts as used; the next stream is served")
  func malformedOpen() throws {
    let vector = try #require(try Vectors.frames().invalid.first { $0.name == "open_empty_method" })
    #expect(vector.error.streamId == 3)
    var server = Driven.ready(.server)
    #expect(server.receive([UInt8](hex: vector.hex)).isEmpty)
    #expect(server.written().resets == [StreamCode(3, .protocolError)])
    #expect(server.core.highestPeerStreamID == 3)
    #expect(server.receive(openFrame(5)).seen == [.opened(5, method: testMethod, endStream: false)])
    #expect(server.receive(dataFrame(5, [9])).seen == [.message(5, [9])])
    #expect(server.receive(openFrame(3)).seen == [.connectionError(.protocolError)], "3 was used by the malformed OPEN")
  }

  @Test("an OPEN whose metadata block exceeds MAX_METADATA_SIZE gets RESET MESSAGE_TOO_LARGE and is not opened")
  func openMetadataTooLarge() {
    var server = Driven.ready(.server, settings: ConnectionSettings(maxMetadataSize: 64))
    let events = server.receive(openFrame(1, metadata: ["name": String(repeating: "v", count: 60)]))
    #expect(events.isEmpty)
    #expect(server.written().resets == [StreamCode(1, .messageTooLarge)])
    #expect(
      server.receive(openFrame(3, metadata: ["n": "v"])).seen == [.opened(3, method: testMethod, endStream: false)])
  }

  // MARK: - Stream rules

  @Test("DATA after the client's END_STREAM is RESET STREAM_CLOSED")
  func dataAfterEndStream() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1), dataFrame(1, [1], endStream: true))
    let events = server.receive(dataFrame(1, [2]))
    #expect(events.seen == [.reset(1, .streamClosed, byPeer: false)])
    #expect(server.written().resets == [StreamCode(1, .streamClosed)])
    #expect(!server.core.isOpen(1))
  }

  @Test("DATA after OPEN with END_STREAM is RESET STREAM_CLOSED")
  func dataAfterOpenEndStream() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1, endStream: true))
    #expect(server.receive(dataFrame(1, [2])).seen == [.reset(1, .streamClosed, byPeer: false)])
  }

  @Test(
    "END_STREAM while a message is incomplete is RESET PROTOCOL_ERROR",
    arguments: [
      [dataFrame(1, [1], endMessage: false, endStream: true)],
      [dataFrame(1, [1], endMessage: false), dataFrame(1, [], endMessage: false, endStream: true)],
    ])
  func endStreamInsideMessage(_ frames: [Frame]) {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    let events = server.receive(encode(frames))
    #expect(events.seen == [.reset(1, .protocolError, byPeer: false)])
    #expect(server.written().resets == [StreamCode(1, .protocolError)])
  }

  @Test(
    "HEADERS or TRAILERS from a client on an open stream is RESET PROTOCOL_ERROR",
    arguments: [Frame.headers(streamID: 1, [:]), .trailers(streamID: 1, .ok)])
  func clientSendsServerFrames(_ frame: Frame) {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    #expect(server.receive(frame).seen == [.reset(1, .protocolError, byPeer: false)])
    #expect(server.written().resets == [StreamCode(1, .protocolError)])
  }

  @Test(
    "a stream error on a stream that is already closed sends no RESET",
    arguments: [Frame.headers(streamID: 1, [:]), .trailers(streamID: 1, .ok)])
  func noResetForClosedStream(_ frame: Frame) {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    #expect(server.core.sendTrailers(streamID: 1, .ok) == true)
    _ = server.written()
    #expect(server.receive(frame).isEmpty)
    #expect(server.written().resets.isEmpty)
  }

  @Test("WINDOW_UPDATE with increment 0 on an open stream is RESET PROTOCOL_ERROR; the connection goes on")
  func zeroIncrementOnStream() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1), openFrame(3))
    #expect(server.receive(.windowUpdate(streamID: 1, increment: 0)).seen == [.reset(1, .protocolError, byPeer: false)])
    #expect(server.written().resets == [StreamCode(1, .protocolError)])
    #expect(server.receive(dataFrame(3, [7])).seen == [.message(3, [7])])
  }

  @Test("WINDOW_UPDATE with increment 0 on a closed stream is ignored")
  func zeroIncrementOnClosedStream() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    server.core.sendTrailers(streamID: 1, .ok)
    _ = server.written()
    #expect(server.receive(.windowUpdate(streamID: 1, increment: 0)).isEmpty)
    #expect(server.written().isEmpty)
  }

  @Test("a server DATA with END_STREAM is RESET PROTOCOL_ERROR at the client")
  func serverEndStream() throws {
    var client = Driven.ready(.client)
    let id = try client.core.open()
    _ = client.written()
    #expect(client.receive(dataFrame(id, [1], endStream: true)).seen == [.reset(1, .protocolError, byPeer: false)])
    #expect(client.written().resets == [StreamCode(1, .protocolError)])
  }

  @Test(
    "HEADERS after DATA, or a second HEADERS, is RESET PROTOCOL_ERROR at the client",
    arguments: [dataFrame(1, [1]), .headers(streamID: 1, ["a": "b"])])
  func headersAfterResponseBegan(_ first: Frame) throws {
    var client = Driven.ready(.client)
    _ = try client.core.open()
    _ = client.written()
    #expect(client.receive(first).count == 1)
    #expect(client.receive(.headers(streamID: 1, [:])).seen == [.reset(1, .protocolError, byPeer: false)])
    #expect(client.written().resets == [StreamCode(1, .protocolError)])
  }

  @Test("TRAILERS while a response message is incomplete fails the call (stream PROTOCOL_ERROR) and sends no RESET")
  func trailersInsideMessage() throws {
    var client = Driven.ready(.client)
    _ = try client.core.open()
    _ = client.written()
    #expect(client.receive(dataFrame(1, [1, 2], endMessage: false)).isEmpty)
    let events = client.receive(.trailers(streamID: 1, .ok))
    #expect(!client.core.isOpen(1))
    #expect(client.written().resets.isEmpty, "TRAILERS already closed the stream")
    #expect(events.seen == [.reset(1, .protocolError, byPeer: false)])
  }

  @Test("a RESET from the peer ends the stream (byPeer) and is not answered with RESET")
  func peerReset() throws {
    var pair = Pair()
    let id = try pair.client.core.open()
    pair.clientToServer()
    #expect(pair.server.core.resetStream(streamID: id, .refusedStream) == true)
    #expect(pair.server.core.resetStream(streamID: id, .refusedStream) == false)
    #expect(pair.serverToClient().seen == [.reset(1, .refusedStream, byPeer: true)])
    #expect(pair.client.written().isEmpty)
    // The other way: a client CANCEL.
    let next = try pair.client.core.open()
    pair.clientToServer()
    #expect(pair.client.core.resetStream(streamID: next, .cancel) == true)
    #expect(pair.clientToServer().seen == [.reset(3, .cancel, byPeer: true)])
    #expect(pair.server.written().isEmpty)
  }

  @Test("DATA, RESET and WINDOW_UPDATE on a stream this side already ended are dropped without an error")
  func closedStreamFrames() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    #expect(server.core.sendTrailers(streamID: 1, .ok) == true)
    _ = server.written()
    let events = server.receive(
      dataFrame(1, [1, 2, 3]), .windowUpdate(streamID: 1, increment: 5), .reset(streamID: 1, .cancel))
    #expect(events.isEmpty)
    #expect(server.written().isEmpty)
    #expect(server.core.phase == .active)
  }

  // MARK: - PING

  @Test("a PING is answered with an ACK carrying the same 8 bytes")
  func pingAck() {
    var server = Driven.ready(.server)
    #expect(server.receive(.ping(ack: false, payload: 0x0102_0304_0506_0708)).isEmpty)
    #expect(server.written() == [.ping(ack: true, payload: 0x0102_0304_0506_0708)])
    #expect(server.core.pingsReceived == 1)
  }

  @Test("a PING ACK is reported, not answered, and not counted")
  func pingAckReceived() {
    var server = Driven.ready(.server)
    #expect(server.receive(.ping(ack: true, payload: 77)).seen == [.pingAck(77)])
    #expect(server.written().isEmpty)
    #expect(server.core.pingsReceived == 0)
  }

  @Test("sendPing round trip: the peer's ACK comes back as .pingAck with the payload")
  func pingRoundTrip() {
    var pair = Pair()
    pair.client.core.sendPing(42)
    #expect(pair.flushClient() == [.ping(ack: false, payload: 42)])
    let (client, server) = pair.pump()
    #expect(server.isEmpty)
    #expect(client.seen == [.pingAck(42)])
  }
}
