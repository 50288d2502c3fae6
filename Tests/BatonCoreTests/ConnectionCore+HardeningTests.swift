import BatonCore
import Testing

@Suite("ConnectionCore: failed connections, ping allowance, malformed TRAILERS")
struct ConnectionCoreHardeningTests {
  @Test(
    "GOAWAY with an error code: streams above its last id are refused, the rest fail, nothing more is processed or sent",
    arguments: [ErrorCode.protocolError, ErrorCode(rawValue: 0xBEEF)])
  func clientReceivesErrorGoAway(code: ErrorCode) throws {
    var client = Driven.ready(.client)
    for _ in 0..<3 { _ = try client.core.open() }
    _ = client.written()
    let events = client.receive(.goAway(lastStreamID: 1, code, debug: "broken"), .ping(ack: false, payload: 7))
    #expect(
      events.seen == [
        .reset(3, .refusedStream, byPeer: true), .reset(5, .refusedStream, byPeer: true), .goAway(1, code),
        .connectionError(code),
      ])
    #expect(client.core.phase == .closed)
    #expect(!client.core.isOpen(1), "stream 1 is ended with the connection: it may have been processed")
    #expect(client.written().isEmpty, "no GOAWAY in reply and no ACK of the PING after it")
  }

  @Test("a server receiving a client's GOAWAY with an error code stops processing and sends nothing")
  func serverReceivesErrorGoAway() {
    var server = Driven.ready(.server)
    #expect(server.receive(openFrame(1)).seen == [.opened(1, method: testMethod, endStream: false)])
    let events = server.receive(.goAway(lastStreamID: 0, .protocolError, debug: ""), openFrame(3))
    #expect(events.seen == [.goAway(0, .protocolError), .connectionError(.protocolError)])
    #expect(server.written().isEmpty)
  }

  @Test("a GOAWAY with NO_ERROR still leaves the connection working", arguments: [ConnectionCore.Role.client, .server])
  func noErrorGoAwayIsGraceful(role: ConnectionCore.Role) {
    var core = Driven.ready(role)
    let events = core.receive(.goAway(lastStreamID: StreamID.max, .noError, debug: ""), .ping(ack: false, payload: 1))
    #expect(events.seen == [.goAway(StreamID.max, .noError)])
    #expect(core.written() == [.ping(ack: true, payload: 1)])
  }

  @Test(
    "PINGs beyond the allowance: exactly that many are answered, then ENHANCE_YOUR_CALM",
    arguments: [ConnectionCore.Role.client, .server])
  func pingAllowance(role: ConnectionCore.Role) {
    var core = Driven.ready(role)
    core.core.pingAllowance = 3
    let pings = (0..<50).map { Frame.ping(ack: false, payload: UInt64($0)) }
    let events = core.receive(encode(pings))
    #expect(events.seen == [.connectionError(.enhanceYourCalm)])
    let written = core.written()
    #expect(written.filter { if case .ping(true, _) = $0 { true } else { false } }.count == 3)
    #expect(written.last == .goAway(lastStreamID: 0, .enhanceYourCalm, debug: "too many pings"))
    #expect(core.core.pingsReceived == 3)
  }

  @Test("a malformed TRAILERS ends the client's call with PROTOCOL_ERROR and no RESET (PROTOCOL.md 4.6)")
  func malformedTrailers() throws {
    var client = Driven.ready(.client)
    _ = try client.core.open()
    _ = client.written()
    // TRAILERS whose message is not UTF-8.
    var bytes: [UInt8] = []
    let payload: [UInt8] = [0, 0, 1, 0xFF, 0, 0]
    bytes += [0, 0, UInt8(payload.count), FrameType.trailers, 0, 0, 0, 0, 1] + payload
    let events = client.receive(bytes)
    #expect(events.seen == [.reset(1, .protocolError, byPeer: false)])
    #expect(client.written().isEmpty, "no RESET: the server already closed the stream")
    #expect(!client.core.isOpen(1))
  }
}
