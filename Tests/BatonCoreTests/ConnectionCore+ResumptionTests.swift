import BatonCore
import Testing

@Suite("ConnectionCore: checkpoints of resumable streams (1.1)")
struct ConnectionCoreResumptionTests {
  @Test("both sides announce RESUMPTION: a server's checkpoint reaches the client after the message it covers")
  func negotiated() throws {
    var pair = Pair()
    #expect(pair.client.core.resumptionOn && pair.server.core.resumptionOn)
    let id = try pair.client.core.open()
    pair.clientToServer()
    _ = pair.server.core.send(id, [1, 2, 3])
    let sent = pair.server.core.sendCheckpoint(streamID: id, consumed: 1, token: [9, 9])
    #expect(sent)
    let events = pair.serverToClient().resolved(in: [])
    #expect(events.seen.suffix(1) == [.checkpoint(id, consumed: 1, token: [9, 9])])
  }

  @Test(
    "either side without RESUMPTION (a 1.0 peer): no checkpoint is sent",
    arguments: [(true, false), (false, true)])
  func offWithOneSide(clientAnnounces: Bool, serverAnnounces: Bool) throws {
    var pair = Pair(
      client: ConnectionSettings(resumption: clientAnnounces), server: ConnectionSettings(resumption: serverAnnounces))
    #expect(!pair.server.core.resumptionOn && !pair.client.core.resumptionOn)
    let id = try pair.client.core.open()
    pair.clientToServer()
    let sent = pair.server.core.sendCheckpoint(streamID: id, consumed: 0, token: [])
    #expect(!sent)
    let written = pair.flushServer()
    #expect(written.isEmpty)
  }

  @Test("a CHECKPOINT received while resumption is off fails the connection with PROTOCOL_ERROR")
  func unexpectedCheckpoint() throws {
    var client = Driven.ready(.client, peer: ConnectionSettings(resumption: false))
    let id = try client.core.open()
    _ = client.written()
    let events = client.receive(.checkpoint(streamID: id, consumed: 0, token: []))
    #expect(events.seen == [.connectionError(.protocolError)])
  }

  @Test("a CHECKPOINT from a client is a stream error PROTOCOL_ERROR")
  func checkpointFromClient() {
    var server = Driven.ready(.server)
    _ = server.receive(openFrame(1))
    _ = server.written()
    let events = server.receive(.checkpoint(streamID: 1, consumed: 0, token: []))
    #expect(events.seen == [.reset(1, .protocolError, byPeer: false)])
    let written = server.written()
    #expect(written == [.reset(streamID: 1, .protocolError)])
  }

  @Test("a checkpoint taken while a message waits for credit follows that message on the wire")
  func checkpointAfterPendingMessage() throws {
    var pair = Pair(client: ConnectionSettings(initialWindowSize: 4))
    let id = try pair.client.core.open()
    pair.clientToServer()
    let outcome = pair.server.core.send(id, [1, 2, 3, 4, 5, 6, 7, 8]).outcome
    #expect(outcome == .blocked)
    let sent = pair.server.core.sendCheckpoint(streamID: id, consumed: 1, token: [7])
    #expect(sent)
    let first = pair.flushServer()
    #expect(!first.contains { if case .checkpoint = $0 { true } else { false } }, "not before the message is out")
    pair.deliverToClient()
    pair.client.core.consumed(streamID: id, bytes: 4)
    pair.clientToServer()
    let rest = pair.flushServer()
    #expect(rest.last == .checkpoint(streamID: id, consumed: 1, token: [7]))
  }
}

@Suite("ConnectionCore: cutting a resumable stream")
struct ConnectionCoreResumableCutTests {
  /// Cuts a stream at a message boundary, for `cause`, once its server has sent a CHECKPOINT and
  /// a message (or, with `checkpointOut` false, once its CHECKPOINT waits behind a message that
  /// a spent window holds back, so that nothing of it has gone out). Returns what was written.
  private func cutCheckpointedStream(_ cause: ConnectionCore.CutCause, checkpointOut: Bool = true) throws -> [Frame] {
    var pair = Pair(client: ConnectionSettings(initialWindowSize: 4))
    let id = try pair.client.core.open()
    pair.clientToServer()
    let first = pair.server.core.send(id, [1, 2, 3, 4]).outcome
    #expect(first == .written)
    if !checkpointOut {
      let second = pair.server.core.send(id, [5, 6]).outcome
      #expect(second == .blocked, "the window is spent: nothing of it goes out")
    }
    let checkpointed = pair.server.core.sendCheckpoint(streamID: id, consumed: 1, token: [])
    #expect(checkpointed)
    _ = pair.flushServer()
    let cut = pair.server.core.cutStream(streamID: id, Trailers(status: 14), because: cause)
    #expect(cut)
    #expect(!pair.server.core.isOpen(id))
    return pair.flushServer()
  }

  @Test(
    "a stop's cut sends no TRAILERS on a stream that has sent a CHECKPOINT, even between messages: the close resumes it"
  )
  func stopCutLeavesCheckpointedStreamToTheClose() throws {
    #expect(try cutCheckpointedStream(.stop).isEmpty, "nothing: no TRAILERS, no RESET")
  }

  @Test("a checkpoint still waiting behind a message has not reached the client: that stream's cut sends TRAILERS")
  func pendingCheckpointDoesNotCount() throws {
    #expect(try cutCheckpointedStream(.stop, checkpointOut: false) == [.trailers(streamID: 1, Trailers(status: 14))])
  }

  @Test("the call's own deadline ends a checkpointed stream with TRAILERS at a message boundary: the call is over")
  func callDeadlineIsTheEnd() throws {
    #expect(try cutCheckpointedStream(.callDeadline) == [.trailers(streamID: 1, Trailers(status: 14))])
  }
}
