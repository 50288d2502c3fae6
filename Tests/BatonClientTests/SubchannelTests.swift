import Testing

@testable import BatonClient

/// A stand-in for a connection: the subchannel only needs identity.
private final class Conn {}

@Suite("One address's connections as a state machine (no sockets)")
struct SubchannelTests {
  private let backoff = Client.Backoff(initial: .milliseconds(50), multiplier: 2, jitter: 0, maximum: .seconds(1))
  private let endpoint = Endpoint(host: "10.0.0.1", port: 80)

  @Test("idle → connecting → ready: the handshake makes it ready and clears the failures")
  func happyPath() {
    var channel = Subchannel<Conn>(endpoint: endpoint)
    #expect(channel.ready == nil)
    let r1 = channel.connectIfIdle()
    #expect(r1 == .connect)
    let r2 = channel.connectIfIdle()
    #expect(r2 == .none, "a second connect while one is under way")
    let connection = Conn()
    let r3 = channel.socketConnected(connection)
    #expect(r3)
    #expect(channel.ready == nil, "not ready before the handshake")
    let r4 = channel.handshakeCompleted(connection, maxStreams: 7)
    #expect(r4)
    #expect(channel.ready?.connection === connection)
    #expect(channel.ready?.maxStreams == 7)
    #expect(!channel.unreachable)
  }

  @Test("a failed TCP connect backs off, doubling, and marks the address unreachable at once")
  func connectFailures() {
    var channel = Subchannel<Conn>(endpoint: endpoint)
    _ = channel.connectIfIdle()
    let r5 = channel.connectFailed(reason: "refused", unreachable: true, backoff: backoff)
    #expect(r5 == .reconnect(afterNanoseconds: 50_000_000))
    #expect(channel.unreachable)
    #expect(channel.lastError == "refused")
    let r6 = channel.connectIfIdle()
    #expect(r6 == .none, "no connect while the backoff runs")
    let r7 = channel.reconnectDue()
    #expect(r7 == .connect)
    let r8 = channel.connectFailed(reason: "refused", unreachable: true, backoff: backoff)
    #expect(r8 == .reconnect(afterNanoseconds: 100_000_000))
    // A handshake that completes ends the run.
    _ = channel.reconnectDue()
    let connection = Conn()
    _ = channel.socketConnected(connection)
    _ = channel.handshakeCompleted(connection, maxStreams: 1)
    #expect(channel.failures == 0)
    #expect(!channel.unreachable)
  }

  @Test("one connection broken before its handshake is retried before the address counts as unreachable")
  func brokenHandshake() {
    var channel = Subchannel<Conn>(endpoint: endpoint)
    _ = channel.connectIfIdle()
    let first = Conn()
    _ = channel.socketConnected(first)
    let r9 = channel.closed(first, reason: "reset", backoff: backoff)
    #expect(r9 == .reconnect(afterNanoseconds: 50_000_000))
    #expect(!channel.unreachable, "one broken handshake may be a race with the server's own close")
    _ = channel.reconnectDue()
    let second = Conn()
    _ = channel.socketConnected(second)
    _ = channel.closed(second, reason: "reset", backoff: backoff)
    #expect(channel.unreachable, "two in a row: the address is unreachable")
  }

  @Test("GOAWAY: the connection drains and the address reconnects at once; its close is then quiet")
  func goAway() {
    var channel = Subchannel<Conn>(endpoint: endpoint)
    _ = channel.connectIfIdle()
    let old = Conn()
    _ = channel.socketConnected(old)
    _ = channel.handshakeCompleted(old, maxStreams: 10)
    let r10 = channel.goAway(old, refusal: false, debug: "", backoff: backoff)
    #expect(r10 == .connect)
    #expect(channel.ready == nil)
    #expect(channel.draining.count == 1)
    #expect(channel.owns(old))
    let r11 = channel.closed(old, reason: "done", backoff: backoff)
    #expect(r11 == .none, "a new connection is already being made")
    #expect(channel.draining.isEmpty)
  }

  @Test("a connection-limit GOAWAY backs off by the refusals, and an opened stream clears them")
  func refusal() {
    var channel = Subchannel<Conn>(endpoint: endpoint)
    _ = channel.connectIfIdle()
    let connection = Conn()
    _ = channel.socketConnected(connection)
    _ = channel.handshakeCompleted(connection, maxStreams: 10)
    let r12 = channel.goAway(connection, refusal: true, debug: "full", backoff: backoff)
    #expect(r12 == .reconnect(afterNanoseconds: 50_000_000))
    #expect(channel.unreachable, "a full server is no place for a fail-fast call")
    #expect(channel.lastError == "connection limit: full")
    _ = channel.reconnectDue()
    let next = Conn()
    _ = channel.socketConnected(next)
    _ = channel.handshakeCompleted(next, maxStreams: 10)
    #expect(!channel.unreachable)
    channel.streamOpened()
    #expect(channel.refusals == 0)
  }

  @Test("a connection a call set aside leaves the address idle until its close reconnects")
  func setAside() {
    var channel = Subchannel<Conn>(endpoint: endpoint)
    _ = channel.connectIfIdle()
    let connection = Conn()
    _ = channel.socketConnected(connection)
    _ = channel.handshakeCompleted(connection, maxStreams: 10)
    channel.setAside(connection)
    #expect(channel.ready == nil)
    let r13 = channel.closed(connection, reason: "lost", backoff: backoff)
    #expect(r13 == .connect)
  }

  @Test("a lost ready connection reconnects at once, and calls wait for that attempt")
  func lostReady() {
    var channel = Subchannel<Conn>(endpoint: endpoint)
    _ = channel.connectIfIdle()
    let connection = Conn()
    _ = channel.socketConnected(connection)
    _ = channel.handshakeCompleted(connection, maxStreams: 10)
    let r14 = channel.closed(connection, reason: "lost", backoff: backoff)
    #expect(r14 == .connect)
    #expect(!channel.unreachable)
    #expect(channel.lastError == "lost")
  }

  @Test("shut down: every connection is handed back to drain, nothing reconnects, and it finishes when they close")
  func shutDown() {
    var channel = Subchannel<Conn>(endpoint: endpoint)
    _ = channel.connectIfIdle()
    let connection = Conn()
    _ = channel.socketConnected(connection)
    _ = channel.handshakeCompleted(connection, maxStreams: 10)
    let closing = channel.shutDown()
    #expect(closing.count == 1 && closing[0] === connection)
    #expect(channel.isShutDown)
    #expect(!channel.isFinished)
    let r15 = channel.connectIfIdle()
    #expect(r15 == .none)
    let r16 = channel.closed(connection, reason: "drained", backoff: backoff)
    #expect(r16 == .none)
    #expect(channel.isFinished)
    // A connect that completes after the shutdown is refused.
    let late = Conn()
    let r17 = channel.socketConnected(late)
    #expect(!r17)
  }
}
