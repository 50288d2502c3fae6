import BatonCore
import Testing

@Suite("A core whose socket is gone")
struct TransportClosedTests {
  @Test("opens no stream, forgets its streams and writes nothing more, whatever it held")
  func closedForGood() throws {
    var driven = Driven.ready(.client)
    let open = try driven.core.openStream(RequestHead(method: "a/B"), endStream: false)
    _ = driven.written()
    #expect(driven.core.canOpenStream)

    driven.core.transportClosed()
    #expect(driven.core.phase == .closed)
    #expect(driven.core.openStreamCount == 0)
    #expect(!driven.core.canOpenStream)
    #expect(throws: ConnectionCore.OpenError.goingAway) {
      try driven.core.openStream(RequestHead(method: "a/B"), endStream: true)
    }
    var events: [ConnectionEvent] = []
    #expect(driven.core.sendMessage(streamID: open, [1, 2], events: &events) == .streamClosed)
    driven.core.sendPing(7)
    driven.core.sendGoAway(lastStreamID: 0)
    #expect(driven.written().isEmpty, "nothing is written to a socket that is gone")
    driven.core.transportClosed()  // idempotent
    #expect(driven.core.phase == .closed)
  }
}
