import BatonCore
import Testing

/// Flow control, message size and the sender-side limits of ``ConnectionCore`` (PROTOCOL.md
/// sections 5, 7.3, 9 and 16.1).
@Suite("ConnectionCore flow control and limits")
struct ConnectionCoreFlowControlTests {
  // MARK: - Receiving

  @Test(
    "DATA that exactly fills the stream window is accepted; one byte more is RESET FLOW_CONTROL_ERROR and the connection goes on"
  )
  func streamWindowOverrun() {
    var server = Driven.ready(.server, settings: ConnectionSettings(initialWindowSize: 1024))
    server.receive(openFrame(1), openFrame(3))
    // A whole message the application has not consumed yet keeps the window full (a fragment
    // would not: its credit goes back as it is buffered).
    #expect(server.receive(dataFrame(1, pattern(1024))).seen == [.message(1, pattern(1024))])
    #expect(server.receive(dataFrame(1, [1])).seen == [.reset(1, .flowControlError, byPeer: false)])
    #expect(server.written().resets == [StreamCode(1, .flowControlError)])
    #expect(server.core.phase == .active)
    #expect(server.receive(dataFrame(3, [7])).seen == [.message(3, [7])])
  }

  @Test("DATA beyond the connection window is a connection FLOW_CONTROL_ERROR")
  func connectionWindowOverrun() {
    var server = Driven.ready(
      .server, settings: ConnectionSettings(initialWindowSize: 4096, connectionWindowSize: 1024))
    server.receive(openFrame(1), openFrame(3))
    #expect(server.receive(dataFrame(1, pattern(1000))).seen == [.message(1, pattern(1000))])
    #expect(
      server.receive(dataFrame(3, pattern(24))).seen == [.message(3, pattern(24))], "exactly the rest of the window")
    #expect(server.receive(dataFrame(3, [1])).seen == [.connectionError(.flowControlError)])
    #expect(server.written().goAways == [StreamCode(3, .flowControlError)])
  }

  @Test("DATA on a closed stream still counts against the connection window")
  func closedStreamDataCounts() {
    var server = Driven.ready(
      .server, settings: ConnectionSettings(initialWindowSize: 4096, connectionWindowSize: 1024))
    server.receive(openFrame(1))
    server.core.sendTrailers(streamID: 1, .ok)
    // 1025 bytes on a closed stream: more than the whole connection window.
    #expect(server.receive(dataFrame(1, pattern(1025))).seen == [.connectionError(.flowControlError)])
  }

  @Test(
    "a message whose fragments exceed MAX_MESSAGE_SIZE is RESET MESSAGE_TOO_LARGE before END_MESSAGE; exactly the limit is fine"
  )
  func messageTooLarge() {
    var server = Driven.ready(.server, settings: ConnectionSettings(maxMessageSize: 100))
    server.receive(openFrame(1), openFrame(3), openFrame(5))
    #expect(
      server.receive(dataFrame(1, pattern(60), endMessage: false), dataFrame(1, pattern(40))).seen == [
        .message(1, pattern(60) + pattern(40))
      ])
    #expect(server.receive(dataFrame(3, pattern(60), endMessage: false)).isEmpty)
    #expect(
      server.receive(dataFrame(3, pattern(41), endMessage: false)).seen == [.reset(3, .messageTooLarge, byPeer: false)])
    #expect(server.receive(dataFrame(5, pattern(101))).seen == [.reset(5, .messageTooLarge, byPeer: false)])
    #expect(server.written().resets == [StreamCode(3, .messageTooLarge), StreamCode(5, .messageTooLarge)])
  }

  // MARK: - Returning credit

  @Test(
    "consumed sends a stream WINDOW_UPDATE once half the stream window is consumed, and a connection one at half the connection window"
  )
  func consumedThresholds() {
    var server = Driven.ready(
      .server, settings: ConnectionSettings(initialWindowSize: 4096, connectionWindowSize: 8192))
    server.receive(openFrame(1))
    #expect(server.receive(dataFrame(1, pattern(1500))).seen == [.message(1, pattern(1500))])
    #expect(server.written().isEmpty, "delivery alone returns nothing")
    server.core.consumed(streamID: 1, bytes: 1500)
    #expect(server.written().isEmpty, "1500 < 2048")
    server.receive(dataFrame(1, pattern(600)))
    server.core.consumed(streamID: 1, bytes: 600)
    #expect(server.written() == [.windowUpdate(streamID: 1, increment: 2100)])
    server.receive(dataFrame(1, pattern(2000)))
    server.core.consumed(streamID: 1, bytes: 2000)
    #expect(
      server.written() == [.windowUpdate(streamID: 0, increment: 4100)],
      "4100 >= 4096 for the connection; 2000 < 2048 for the stream")
    server.core.consumed(streamID: 1, bytes: 0)
    #expect(server.written().isEmpty)
  }

  @Test("consumed keeps the stream window usable: the peer may send a whole window again after a WINDOW_UPDATE")
  func creditIsRestored() {
    var server = Driven.ready(
      .server, settings: ConnectionSettings(initialWindowSize: 1024, connectionWindowSize: 1 << 20))
    server.receive(openFrame(1))
    for round in 0..<5 {
      let chunk = pattern(1024, seed: UInt8(round))
      #expect(server.receive(dataFrame(1, chunk)).seen == [.message(1, chunk)], "round \(round)")
      server.core.consumed(streamID: 1, bytes: 1024)
      #expect(server.written().increments(on: 1) == [1024])
    }
  }

  @Test("after the peer's END_STREAM, consumed returns connection credit but no stream credit")
  func consumedAfterEndStream() {
    var server = Driven.ready(
      .server, settings: ConnectionSettings(initialWindowSize: 2048, connectionWindowSize: 2048))
    server.receive(openFrame(1))
    #expect(
      server.receive(dataFrame(1, pattern(1500), endStream: true)).seen == [.message(1, pattern(1500)), .endOfInput(1)])
    server.core.consumed(streamID: 1, bytes: 1500)
    #expect(server.written() == [.windowUpdate(streamID: 0, increment: 1500)])
  }

  @Test("consumed for a stream that has since been reset still returns the connection credit")
  func consumedAfterReset() {
    var server = Driven.ready(
      .server, settings: ConnectionSettings(initialWindowSize: 2048, connectionWindowSize: 2048))
    server.receive(openFrame(1), dataFrame(1, pattern(1500)))
    #expect(server.receive(.reset(streamID: 1, .cancel)).seen == [.reset(1, .cancel, byPeer: true)])
    server.core.consumed(streamID: 1, bytes: 1500)
    #expect(server.written() == [.windowUpdate(streamID: 0, increment: 1500)])
  }

  @Test(
    "DATA on a stream the server already ended is dropped without error, and its connection credit comes back at once")
  func dataCrossingTrailers() throws {
    var pair = Pair(server: ConnectionSettings(connectionWindowSize: 4096))
    let id = try pair.client.core.open()
    #expect(pair.clientToServer().seen == [.opened(1, method: testMethod, endStream: false)])
    #expect(pair.server.core.sendTrailers(streamID: id, Trailers(status: 9)) == true)
    pair.flushServer()  // TRAILERS in flight
    #expect(pair.client.core.send(id, pattern(3000)).outcome == .written)
    #expect(pair.clientToServer().isEmpty, "discarded, no error")
    let frames = pair.flushServer()
    #expect(frames.resets.isEmpty)
    #expect(frames == [.windowUpdate(streamID: 0, increment: 3000)])
    #expect(pair.deliverToClient().seen == [.trailers(1, status: 9)])
    // The credit came back: a second 3000-byte message fits the 4096-byte connection window.
    let next = try pair.client.core.open()
    #expect(pair.client.core.send(next, pattern(3000)).outcome == .written)
    #expect(
      pair.clientToServer().seen == [.opened(3, method: testMethod, endStream: false), .message(3, pattern(3000))])
  }

  @Test("bytes of a partial message are returned to the connection window when the stream is reset")
  func partialCreditOnReset() {
    var server = Driven.ready(
      .server, settings: ConnectionSettings(initialWindowSize: 4096, connectionWindowSize: 4096))
    server.receive(openFrame(1))
    #expect(server.receive(dataFrame(1, pattern(3000), endMessage: false)).isEmpty)
    #expect(server.receive(.reset(streamID: 1, .cancel)).seen == [.reset(1, .cancel, byPeer: true)])
    let frames = server.written()
    #expect(frames.increments(on: 0) == [3000])
  }

  @Test("a MESSAGE_TOO_LARGE reset returns the whole partial message to the connection window")
  func partialCreditOnTooLarge() {
    var server = Driven.ready(
      .server, settings: ConnectionSettings(initialWindowSize: 4096, connectionWindowSize: 4096, maxMessageSize: 2500))
    server.receive(openFrame(1))
    #expect(server.receive(dataFrame(1, pattern(2000), endMessage: false)).isEmpty)
    #expect(
      server.receive(dataFrame(1, pattern(1000), endMessage: false)).seen == [
        .reset(1, .messageTooLarge, byPeer: false)
      ])
    let frames = server.written()
    #expect(frames.resets == [StreamCode(1, .messageTooLarge)])
    #expect(frames.increments(on: 0) == [3000])
  }

  @Test("a message larger than the stream window still arrives: fragments count as consumed when buffered")
  func messageLargerThanWindow() throws {
    var pair = Pair(server: ConnectionSettings(initialWindowSize: 1024, connectionWindowSize: 2048))
    pair.server.autoConsume = true
    let id = try pair.client.core.open()
    let message = pattern(5000)
    #expect(pair.client.core.send(id, message).outcome == .blocked)
    let (client, server) = pair.pump()
    #expect(server.seen.contains(.message(1, message)))
    #expect(client.seen == [.writable(1)])
  }

  // MARK: - Sending

  @Test(
    "with a small peer INITIAL_WINDOW_SIZE, sendMessage is blocked after a window of DATA, and WINDOW_UPDATEs release the rest then .writable"
  )
  func sendBlockedOnStreamWindow() throws {
    var client = Driven.ready(.client, peer: ConnectionSettings(initialWindowSize: 1024))
    let id = try client.core.open()
    let message = pattern(3000)
    let sent = client.core.send(id, message)
    #expect(sent.outcome == .blocked)
    #expect(sent.events.isEmpty)
    var frames = client.written()
    #expect(frames.first == openFrame(1))
    #expect(frames.dataFrames.map(\.payload.count) == [1024])
    #expect(frames.dataFrames.allSatisfy { !$0.endMessage && !$0.endStream })

    #expect(client.receive(.windowUpdate(streamID: id, increment: 1024)).isEmpty, "still 952 bytes to go")
    let middle = client.written()
    #expect(middle.dataFrames.map(\.payload.count) == [1024])
    #expect(middle.dataFrames.allSatisfy { !$0.endMessage })
    frames += middle

    #expect(client.receive(.windowUpdate(streamID: id, increment: 10_000)).seen == [.writable(1)])
    let last = client.written()
    #expect(last.dataFrames.map(\.payload.count) == [952])
    #expect(last.dataFrames.map(\.endMessage) == [true])
    frames += last
    #expect(frames.dataFrames.flatMap(\.payload) == message)
    #expect(client.core.send(id, [1]).outcome == .written, "writable again")
  }

  @Test("a message blocked on the connection window resumes on a connection WINDOW_UPDATE, not on a stream one")
  func sendBlockedOnConnectionWindow() throws {
    var client = Driven.ready(.client, peer: ConnectionSettings(initialWindowSize: 4096, connectionWindowSize: 1000))
    let a = try client.core.open()
    let b = try client.core.open()
    _ = client.written()
    #expect(client.core.send(a, pattern(800)).outcome == .written)
    let message = pattern(800, seed: 9)
    #expect(client.core.send(b, message).outcome == .blocked)
    var frames = client.written().dataFrames
    #expect(frames.map(\.payload.count) == [800, 200])
    #expect(client.receive(.windowUpdate(streamID: b, increment: 100)).isEmpty)
    #expect(client.written().isEmpty, "the stream has credit; the connection has none")
    #expect(client.receive(.windowUpdate(streamID: 0, increment: 300)).isEmpty)
    frames += client.written().dataFrames
    #expect(client.receive(.windowUpdate(streamID: 0, increment: 1000)).seen == [.writable(b)])
    frames += client.written().dataFrames
    #expect(frames.filter { $0.streamID == b }.flatMap(\.payload) == message)
    #expect(frames.filter { $0.streamID == b }.map(\.endMessage) == [false, false, true])
  }

  @Test("several streams blocked on the connection window all resume, oldest first")
  func severalBlockedStreams() throws {
    var client = Driven.ready(.client, peer: ConnectionSettings(initialWindowSize: 4096, connectionWindowSize: 100))
    let ids = [try client.core.open(), try client.core.open(), try client.core.open()]
    _ = client.written()
    for id in ids { #expect(client.core.send(id, pattern(100, seed: UInt8(id))).outcome != .streamClosed) }
    #expect(client.written().dataFrames.map(\.streamID) == [1])
    #expect(client.receive(.windowUpdate(streamID: 0, increment: 500)).seen == [.writable(3), .writable(5)])
    let frames = client.written().dataFrames
    #expect(frames.map(\.streamID) == [3, 5])
    #expect(frames.allSatisfy { $0.payload.count == 100 && $0.endMessage })
  }

  @Test("messages larger than the peer's MAX_FRAME_SIZE go out as frame-sized fragments, END_MESSAGE on the last")
  func fragmentsToMaxFrameSize() throws {
    var client = Driven.ready(.client, peer: ConnectionSettings(maxFrameSize: 1024))
    let id = try client.core.open()
    _ = client.written()
    let message = pattern(2500)
    #expect(client.core.send(id, message, endStream: true).outcome == .written)
    let frames = client.written().dataFrames
    #expect(frames.map(\.payload.count) == [1024, 1024, 452])
    #expect(frames.map(\.endMessage) == [false, false, true])
    #expect(frames.map(\.endStream) == [false, false, true])
    #expect(frames.flatMap(\.payload) == message)
  }

  @Test("END_STREAM asked for with a blocked message (by sendMessage or sendEnd) rides on its last fragment")
  func endStreamOnBlockedMessage() throws {
    for viaSendEnd in [false, true] {
      var client = Driven.ready(.client, peer: ConnectionSettings(initialWindowSize: 100))
      let id = try client.core.open()
      _ = client.written()
      #expect(client.core.send(id, pattern(250), endStream: !viaSendEnd).outcome == .blocked)
      if viaSendEnd { client.core.sendEnd(streamID: id) }
      #expect(client.written().dataFrames.map(\.payload.count) == [100], "sendEnd writes nothing yet")
      #expect(client.receive(.windowUpdate(streamID: id, increment: 500)).seen == [.writable(1)])
      let last = client.written().dataFrames
      #expect(last.map(\.payload.count) == [150])
      #expect(last.map(\.endStream) == [true])
      #expect(client.core.send(id, [1]).outcome == .streamClosed)
    }
  }

  @Test("a peer window of 0 lets nothing out until a WINDOW_UPDATE; a window raised to exactly 2^31-1 is allowed")
  func zeroWindow() throws {
    var client = Driven.ready(.client, peer: ConnectionSettings(initialWindowSize: 0))
    let id = try client.core.open()
    _ = client.written()
    #expect(client.core.send(id, [1, 2, 3]).outcome == .blocked)
    #expect(client.written().dataFrames.isEmpty)
    #expect(client.core.send(id, []).outcome == .streamClosed, "send nothing more until .writable")
    #expect(client.receive(.windowUpdate(streamID: id, increment: ConnectionSettings.maxWindow)).seen == [.writable(1)])
    #expect(client.written().dataFrames.map(\.payload) == [[1, 2, 3]])
  }

  @Test("a WINDOW_UPDATE taking a stream window above 2^31-1 is RESET FLOW_CONTROL_ERROR")
  func streamWindowOverflow() throws {
    var client = Driven.ready(.client, peer: ConnectionSettings(initialWindowSize: 1))
    let id = try client.core.open()
    _ = client.written()
    #expect(
      client.receive(.windowUpdate(streamID: id, increment: ConnectionSettings.maxWindow)).seen == [
        .reset(1, .flowControlError, byPeer: false)
      ])
    #expect(client.written().resets == [StreamCode(1, .flowControlError)])
    #expect(client.core.phase == .active)
  }

  @Test("a WINDOW_UPDATE taking the connection window above 2^31-1 is a connection FLOW_CONTROL_ERROR")
  func connectionWindowOverflow() {
    var client = Driven.ready(.client)
    #expect(
      client.receive(.windowUpdate(streamID: 0, increment: ConnectionSettings.maxWindow)).seen == [
        .connectionError(.flowControlError)
      ])
    #expect(client.written().goAways == [StreamCode(0, .flowControlError)])
  }

  @Test("a message larger than the peer's MAX_MESSAGE_SIZE is refused whole: nothing is written")
  func sendTooLarge() throws {
    var client = Driven.ready(.client, peer: ConnectionSettings(maxMessageSize: 10))
    let id = try client.core.open()
    _ = client.written()
    #expect(client.core.send(id, pattern(11)).outcome == .tooLarge(limit: 10))
    #expect(client.written().isEmpty)
    #expect(client.core.send(id, pattern(10)).outcome == .written)
  }

  @Test("sendMessage on a stream that does not exist writes nothing")
  func sendOnUnknownStream() {
    var client = Driven.ready(.client)
    #expect(client.core.send(1, [1]).outcome == .streamClosed)
    client.core.sendEnd(streamID: 1)
    client.core.sendHeaders(streamID: 1, [:])
    #expect(client.core.sendTrailers(streamID: 1, .ok) == false)
    #expect(client.written().isEmpty)
  }

  @Test(
    "end to end: the receiver's consumed() credit unblocks the sender, which reports .writable, and the message arrives intact"
  )
  func endToEndCredit() throws {
    var pair = Pair(server: ConnectionSettings(initialWindowSize: 1024))
    pair.server.autoConsume = true
    let id = try pair.client.core.open()
    let first = pattern(1000)
    let second = pattern(1000, seed: 3)
    #expect(pair.client.core.send(id, first).outcome == .written)
    #expect(pair.client.core.send(id, second).outcome == .blocked, "only 24 bytes of credit left")
    let (client, server) = pair.pump()
    #expect(client.seen == [.writable(1)])
    #expect(server.seen == [.opened(1, method: testMethod, endStream: false), .message(1, first), .message(1, second)])
    // The 24-byte fragment of the second message is credited as it arrives, the first message
    // (1000 bytes) when consumed: one WINDOW_UPDATE of 1024. The second message's own consume
    // later returns only its remaining 976, so the total is exact.
    #expect(pair.server.wrote.increments(on: 1).first == 1024)
  }

  @Test(
    "sendTrailers behind a blocked message: the stream stays open, and the status follows the last fragment once credit arrives"
  )
  func trailersAfterBlockedMessage() {
    var server = Driven.ready(.server, peer: ConnectionSettings(initialWindowSize: 100))
    server.receive(openFrame(1))
    let message = pattern(250)
    #expect(server.core.send(1, message).outcome == .blocked)
    #expect(server.core.sendTrailers(streamID: 1, Trailers(status: 0, message: "done")) == true)
    #expect(server.core.isOpen(1), "the status waits for the message")
    #expect(server.core.sendTrailers(streamID: 1, .ok) == false, "one status per stream")
    var frames = server.written()
    #expect(frames.dataFrames.map(\.payload.count) == [100])
    #expect(!frames.contains { if case .trailers = $0 { true } else { false } })
    #expect(server.receive(.windowUpdate(streamID: 1, increment: 500)).seen == [.writable(1)])
    frames += server.written()
    #expect(frames.dataFrames.flatMap(\.payload) == message)
    #expect(frames.last == .trailers(streamID: 1, Trailers(status: 0, message: "done")))
    #expect(!server.core.isOpen(1))
    #expect(frames.dataFrames.allSatisfy { !$0.endStream }, "a server never sets END_STREAM")
  }

  @Test("a cut drops a blocked message of which nothing has gone out and ends the stream with its status at once")
  func cutDropsUnsentMessage() {
    var server = Driven.ready(.server, peer: ConnectionSettings(initialWindowSize: 100))
    server.receive(openFrame(1))
    #expect(server.core.send(1, pattern(100)).outcome == .written)
    #expect(server.core.send(1, pattern(50)).outcome == .blocked, "the window is spent: nothing of it goes out")
    #expect(server.core.cutStream(streamID: 1, Trailers(status: 14), because: .stop) == true)
    #expect(!server.core.isOpen(1))
    let frames = server.written()
    #expect(frames.dataFrames.map(\.payload.count) == [100])
    #expect(frames.last == .trailers(streamID: 1, Trailers(status: 14)))
    #expect(server.receive(.windowUpdate(streamID: 1, increment: 500)).isEmpty)
    #expect(server.written().isEmpty, "nothing of the dropped message follows")
    #expect(server.core.cutStream(streamID: 1, Trailers(status: 14), because: .stop) == false)
  }

  @Test(
    "a cut inside a partly sent message sends no TRAILERS (they would fall inside it): nothing for a stop, RESET CANCEL for the call's deadline, RESET INTERNAL_ERROR for an error",
    arguments: [ConnectionCore.CutCause.stop, .callDeadline, .error])
  func cutInsideMessage(cause: ConnectionCore.CutCause) {
    var server = Driven.ready(.server, peer: ConnectionSettings(initialWindowSize: 100))
    server.receive(openFrame(1))
    #expect(server.core.send(1, pattern(250)).outcome == .blocked)
    #expect(server.core.cutStream(streamID: 1, Trailers(status: 14), because: cause) == true)
    #expect(!server.core.isOpen(1))
    let frames = server.written()
    #expect(frames.dataFrames.map(\.payload.count) == [100])
    #expect(frames.dataFrames.allSatisfy { !$0.endMessage }, "the message stays incomplete")
    #expect(!frames.contains { if case .trailers = $0 { true } else { false } })
    switch cause {
    case .stop:
      #expect(frames.count == 1, "nothing after the fragment")
    case .callDeadline:
      #expect(frames.last == .reset(streamID: 1, .cancel))
    case .error:
      #expect(frames.last == .reset(streamID: 1, .internalError))
    }
    #expect(server.receive(.windowUpdate(streamID: 1, increment: 500)).isEmpty)
    #expect(server.written().isEmpty, "nothing of the dropped message follows")
  }

  // MARK: - Sender-side limits

  @Test("openStream respects the server's MAX_CONCURRENT_STREAMS with .tooManyStreams until a stream ends")
  func tooManyStreams() throws {
    var pair = Pair(server: ConnectionSettings(maxConcurrentStreams: 2))
    _ = try pair.client.core.open()
    _ = try pair.client.core.open()
    #expect(!pair.client.core.canOpenStream)
    #expect(throws: ConnectionCore.OpenError.tooManyStreams) { try pair.client.core.open() }
    pair.clientToServer()
    #expect(pair.server.core.sendTrailers(streamID: 1, .ok) == true)
    pair.serverToClient()
    #expect(pair.client.core.canOpenStream)
    #expect(try pair.client.core.open() == 5, "the refused attempt used no id")
  }

  @Test(
    "openStream refuses metadata larger than the server's MAX_METADATA_SIZE and writes nothing; exactly the limit is fine"
  )
  func metadataTooLarge() throws {
    var client = Driven.ready(.client, peer: ConnectionSettings(maxMetadataSize: 64))
    _ = client.written()
    let tooBig: Metadata = ["k": String(repeating: "v", count: 58)]  // 2 + 2 + 1 + 2 + 58 = 65
    #expect(throws: ConnectionCore.OpenError.metadataTooLarge(size: 65, limit: 64)) {
      try client.core.open(metadata: tooBig)
    }
    #expect(client.written().isEmpty)
    #expect(client.core.nextStreamID == 1)
    #expect(try client.core.open(metadata: ["k": String(repeating: "v", count: 57)]) == 1)
  }

  @Test("a peer announcing MAX_METADATA_SIZE below 64 fails the connection: a status must always fit (PROTOCOL.md 8)")
  func metadataSizeBelowMinimum() {
    for value: UInt32 in [0, 1, 63] {
      var client = Driven(.client)
      let events = client.receive(Preface.bytes + encode(ConnectionSettings(maxMetadataSize: value).frame))
      #expect(events.seen == [.connectionError(.protocolError)], "MAX_METADATA_SIZE \(value)")
    }
    #expect(ConnectionSettings(maxMetadataSize: 63).invalidReason != nil)
    #expect(ConnectionSettings(maxMetadataSize: 64).invalidReason == nil)
  }

  @Test("openStream never writes an OPEN larger than the server's MAX_FRAME_SIZE")
  func openLargerThanFrame() throws {
    var client = Driven.ready(.client, peer: ConnectionSettings(maxFrameSize: 1024))
    _ = client.written()
    let metadata: Metadata = ["k": String(repeating: "v", count: 1100)]  // within MAX_METADATA_SIZE 16384
    #expect(throws: ConnectionCore.OpenError.self) { try client.core.open(metadata: metadata) }
  }

  @Test(
    "the server never sends HEADERS larger than the client's MAX_METADATA_SIZE: it sends TRAILERS RESOURCE_EXHAUSTED instead"
  )
  func headersTooLarge() throws {
    var pair = Pair(client: ConnectionSettings(maxMetadataSize: 64))
    let id = try pair.client.core.open()
    pair.clientToServer()
    pair.server.core.sendHeaders(streamID: id, ["k": String(repeating: "v", count: 100)])
    let frames = pair.flushServer()
    #expect(!frames.contains { if case .headers = $0 { true } else { false } })
    #expect(frames.contains { if case .trailers(_, let trailers) = $0 { trailers.status == 8 } else { false } })
  }
}
