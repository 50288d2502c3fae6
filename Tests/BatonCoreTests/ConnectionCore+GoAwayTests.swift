import BatonCore
import Testing

/// GOAWAY and graceful stop in ``ConnectionCore`` (PROTOCOL.md sections 13 and 14), including the
/// GOAWAY-crossing-OPEN race made deterministic by holding bytes in flight.
@Suite("ConnectionCore GOAWAY")
struct ConnectionCoreGoAwayTests {
  /// A client with streams 1, 3 and 5 open towards a hand-played server.
  static func clientWithThreeStreams() throws -> Driven {
    var client = Driven.ready(.client)
    for _ in 0..<3 { _ = try client.core.open() }
    #expect(client.written().map(\.streamID) == [1, 3, 5])
    return client
  }

  @Test(
    "a client receiving GOAWAY(last 1) reports streams 3 and 5 refused by the peer, keeps stream 1, and opens nothing more"
  )
  func clientReceivesGoAway() throws {
    var client = try Self.clientWithThreeStreams()
    let events = client.receive(.goAway(lastStreamID: 1, .noError, debug: "server stopping"))
    #expect(
      events.seen == [
        .reset(3, .refusedStream, byPeer: true), .reset(5, .refusedStream, byPeer: true), .goAway(1, .noError),
      ])
    #expect(client.core.isOpen(1))
    #expect(!client.core.isOpen(3) && !client.core.isOpen(5))
    #expect(client.core.goAwayReceived == 1)
    #expect(!client.core.canOpenStream)
    #expect(throws: ConnectionCore.OpenError.goingAway) { try client.core.open() }
    #expect(client.written().isEmpty, "refused streams need no RESET")
    // Stream 1 still runs to completion.
    #expect(
      client.receive(dataFrame(1, [1]), .trailers(streamID: 1, .ok)).seen == [
        .message(1, [1]), .trailers(1, status: 0),
      ])
    // A RESET REFUSED_STREAM for a stream already reported refused is ignored.
    #expect(client.receive(.reset(streamID: 5, .refusedStream)).isEmpty)
  }

  @Test("a GOAWAY with a higher last id than an earlier one does not raise it; a lower one refuses more")
  func lastIDNeverRises() throws {
    var client = try Self.clientWithThreeStreams()
    #expect(
      client.receive(.goAway(lastStreamID: 3, .noError, debug: "")).seen == [
        .reset(5, .refusedStream, byPeer: true), .goAway(3, .noError),
      ])
    #expect(client.receive(.goAway(lastStreamID: 7, .noError, debug: "")).seen == [.goAway(3, .noError)])
    #expect(client.core.goAwayReceived == 3)
    #expect(client.core.isOpen(3))
    #expect(
      client.receive(.goAway(lastStreamID: 1, .noError, debug: "")).seen == [
        .reset(3, .refusedStream, byPeer: true), .goAway(1, .noError),
      ])
    #expect(client.core.openStreamIDs == [1])
  }

  @Test("the first graceful GOAWAY (last 2^31-1) refuses nothing but stops new streams")
  func firstGracefulGoAway() throws {
    var client = try Self.clientWithThreeStreams()
    #expect(
      client.receive(.goAway(lastStreamID: StreamID.max, .noError, debug: "")).seen == [.goAway(StreamID.max, .noError)]
    )
    #expect(client.core.openStreamCount == 3)
    #expect(!client.core.canOpenStream)
    #expect(throws: ConnectionCore.OpenError.goingAway) { try client.core.open() }
  }

  @Test("a client that sent GOAWAY opens no more streams")
  func clientSentGoAway() throws {
    var client = Driven.ready(.client)
    client.core.sendGoAway(lastStreamID: 0)
    #expect(client.written().goAways == [StreamCode(0, .noError)])
    #expect(!client.core.canOpenStream)
    #expect(throws: ConnectionCore.OpenError.goingAway) { try client.core.open() }
  }

  @Test(
    "a server that sent GOAWAY(last 3) answers OPEN 5 with RESET REFUSED_STREAM and never reports it; streams up to 3 run on"
  )
  func serverRefusesAboveLastID() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1), openFrame(3))
    server.core.sendGoAway(lastStreamID: 3, debug: "server stopping")
    #expect(server.written() == [.goAway(lastStreamID: 3, .noError, debug: "server stopping")])
    #expect(server.core.goAwaySent == 3)
    #expect(server.receive(openFrame(5)).isEmpty)
    #expect(server.written().resets == [StreamCode(5, .refusedStream)])
    #expect(
      server.receive(dataFrame(5, [1], endStream: true)).isEmpty, "later frames of the refused stream are dropped")
    #expect(server.written().isEmpty)
    #expect(server.receive(dataFrame(3, [2], endStream: true)).seen == [.message(3, [2]), .endOfInput(3)])
  }

  @Test("sendGoAway never raises the last id: a later, higher one goes out with the earlier, lower id")
  func sendGoAwayNeverRaises() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1), openFrame(3))
    server.core.sendGoAway(lastStreamID: 3)
    server.core.sendGoAway(lastStreamID: 7)
    #expect(server.written().goAways == [StreamCode(3, .noError), StreamCode(3, .noError)])
    #expect(server.core.goAwaySent == 3)
    #expect(server.receive(openFrame(5)).isEmpty)
    #expect(server.written().resets == [StreamCode(5, .refusedStream)])
  }

  @Test(
    "two-phase stop: after GOAWAY(2^31-1) an OPEN in flight is still served; after the final GOAWAY(highest id) the next is refused"
  )
  func twoPhaseAtServer() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1))
    server.core.sendGoAway(lastStreamID: StreamID.max)
    #expect(server.receive(openFrame(7)).seen == [.opened(7, method: testMethod, endStream: false)])
    server.core.sendGoAway(lastStreamID: server.core.highestPeerStreamID)
    #expect(server.written().goAways == [StreamCode(StreamID.max, .noError), StreamCode(7, .noError)])
    #expect(server.receive(openFrame(9)).isEmpty)
    #expect(server.written().resets == [StreamCode(9, .refusedStream)])
    #expect(server.core.openStreamIDs.sorted() == [1, 7])
  }

  @Test("a server's connection-error GOAWAY names the highest opened id")
  func connectionErrorLastID() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1), openFrame(5))
    server.receive(.settings([]))
    #expect(server.written().goAways == [StreamCode(5, .protocolError)])
  }

  @Test("a connection-error GOAWAY after a graceful GOAWAY(3) never names a higher last id")
  func errorGoAwayKeepsLowerLastID() {
    var server = Driven.ready(.server)
    server.receive(openFrame(1), openFrame(3))
    server.core.sendGoAway(lastStreamID: 3)
    #expect(server.receive(openFrame(5)).isEmpty, "refused")
    _ = server.written()
    #expect(server.receive(.settings([])).seen == [.connectionError(.protocolError)])
    let goAways = server.written().goAways
    #expect(goAways.map(\.code) == [.protocolError])
    #expect(goAways.map(\.id) == [3])
  }

  // MARK: - The race, made deterministic

  /// Client with streams 1 and 3 open at the server, and stream 5 opened by the client but still in
  /// flight (written, not delivered).
  static func raceSetup() throws -> Pair {
    var pair = Pair()
    _ = try pair.client.core.open()
    _ = try pair.client.core.open()
    #expect(pair.clientToServer().seen.count == 2)
    #expect(try pair.client.core.open() == 5)
    #expect(pair.client.core.send(5, [5], endStream: true).outcome == .written)
    #expect(pair.flushClient().map(\.streamID) == [5, 5])
    return pair
  }

  @Test(
    "GOAWAY crossing OPEN: the client learns stream 5 was refused (safe to retry), and the server, receiving OPEN 5 later, refuses it and never processes it"
  )
  func goAwayCrossesOpen() throws {
    var pair = try Self.raceSetup()
    // The server fixes its last id before OPEN 5 arrives.
    pair.server.core.sendGoAway(lastStreamID: pair.server.core.highestPeerStreamID, debug: "server stopping")
    #expect(pair.server.core.goAwaySent == 3)
    // The server's bytes reach the client first.
    let clientEvents = pair.serverToClient()
    #expect(clientEvents.seen == [.reset(5, .refusedStream, byPeer: true), .goAway(3, .noError)])
    // Then the client's OPEN 5 (and its DATA) reach the server.
    let serverEvents = pair.deliverToServer()
    #expect(serverEvents.isEmpty, "stream 5 is never opened, so never processed")
    #expect(pair.flushServer().resets == [StreamCode(5, .refusedStream)])
    // The RESET reaches a client that already forgot stream 5: no event, no error.
    #expect(pair.deliverToClient().isEmpty)
    #expect(pair.client.core.phase == .active)
    #expect(Set(pair.client.core.openStreamIDs) == [1, 3])
    #expect(!pair.server.log.seen.contains(.opened(5, method: testMethod, endStream: false)))
  }

  @Test(
    "the opposite order: OPEN 5 reaches the server before it fixes the last id, so the last id is 5 and stream 5 is served"
  )
  func openBeforeGoAway() throws {
    var pair = try Self.raceSetup()
    #expect(
      pair.deliverToServer().seen == [
        .opened(5, method: testMethod, endStream: false), .message(5, [5]), .endOfInput(5),
      ])
    pair.server.core.sendGoAway(lastStreamID: pair.server.core.highestPeerStreamID)
    #expect(pair.server.core.goAwaySent == 5)
    #expect(pair.serverToClient().seen == [.goAway(5, .noError)])
    #expect(pair.client.core.isOpen(5))
    #expect(pair.server.core.sendTrailers(streamID: 5, .ok) == true)
    #expect(pair.serverToClient().seen == [.trailers(5, status: 0)])
  }

  @Test(
    "graceful two-phase stop end to end: an OPEN sent before the client read GOAWAY(2^31-1) arrives before the PING ACK and is served"
  )
  func twoPhaseEndToEnd() throws {
    var pair = try Self.raceSetup()
    pair.server.core.sendGoAway(lastStreamID: StreamID.max, debug: "server stopping")
    pair.server.core.sendPing(0xBA77)
    #expect(pair.serverToClient().seen == [.goAway(StreamID.max, .noError)])
    #expect(pair.client.core.isOpen(5))
    // In flight to the server: OPEN 5, its DATA, then the client's PING ACK (a connection is ordered).
    #expect(pair.flushClient() == [.ping(ack: true, payload: 0xBA77)])
    let serverEvents = pair.deliverToServer()
    #expect(
      serverEvents.seen == [
        .opened(5, method: testMethod, endStream: false), .message(5, [5]), .endOfInput(5), .pingAck(0xBA77),
      ])
    // The barrier passed: the final GOAWAY names stream 5.
    pair.server.core.sendGoAway(lastStreamID: pair.server.core.highestPeerStreamID)
    #expect(pair.serverToClient().seen == [.goAway(5, .noError)])
    #expect(Set(pair.client.core.openStreamIDs) == [1, 3, 5], "nothing refused")
  }
}
