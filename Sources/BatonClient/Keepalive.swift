/// Client keepalive for one connection, as a value (PROTOCOL.md 15): notices a peer that went
/// silent — frozen, partitioned, black-holed — while calls wait on it.
///
/// When calls are waiting and nothing at all has arrived for `interval`, send a PING; if nothing
/// arrives within `timeout` after it, the connection is dead. Any frame counts as a sign of
/// life, not only the ACK, so a busy connection never pings. The owner runs ``tick(now:lastInbound:activeCalls:)``
/// at the time each ``Action`` names.
struct Keepalive {
  enum Action: Equatable {
    /// Nothing to do before this time (MonotonicClock ns).
    case sleep(until: UInt64)
    /// Send a PING with this payload, then tick again at `checkAt`.
    case ping(payload: UInt64, checkAt: UInt64)
    /// Nothing arrived within the timeout after a PING: close the connection.
    case dead(silentFor: UInt64)
  }

  let interval: UInt64
  let timeout: UInt64
  /// Ping while no call waits too (keeps NAT and load-balancer state alive).
  let whenIdle: Bool
  private var pingSentAt: UInt64?
  private var pings: UInt64 = 0

  init(interval: UInt64, timeout: UInt64, whenIdle: Bool) {
    self.interval = max(1, interval)
    self.timeout = max(1, timeout)
    self.whenIdle = whenIdle
  }

  /// The payload of this connection's keepalive PINGs: recognisable in a capture, and distinct
  /// per PING.
  static let payloadBase: UInt64 = 0x6B65_6570_0000_0000  // "keep"

  /// `late`: how long after its due time this tick runs. A tick far behind means this side was
  /// starved (a loaded machine), not that the peer went silent: the verdict waits a little
  /// longer rather than blame the peer for this side's delay.
  mutating func tick(now: UInt64, lastInbound: UInt64, activeCalls: Int, late: UInt64 = 0) -> Action {
    if let sent = pingSentAt {
      if lastInbound >= sent {
        pingSentAt = nil  // something came back: alive
      } else if now >= sent &+ timeout {
        if late > timeout / 2 { return .sleep(until: now &+ timeout / 2) }
        return .dead(silentFor: now &- lastInbound)
      } else {
        return .sleep(until: sent &+ timeout)
      }
    }
    guard activeCalls > 0 || whenIdle else { return .sleep(until: max(now, lastInbound) &+ interval) }
    let quietUntil = lastInbound &+ interval
    guard now >= quietUntil else { return .sleep(until: quietUntil) }
    pingSentAt = now
    pings &+= 1
    return .ping(payload: Self.payloadBase | (pings & 0xFFFF_FFFF), checkAt: now &+ timeout)
  }

  /// A PING is out and nothing has come back since: the peer may be frozen. New calls go
  /// elsewhere while this holds (the verdict comes at the timeout).
  var awaitingAnswer: Bool { pingSentAt != nil }

  /// Bytes from the peer wait unread: it is alive, whatever this side has not read yet.
  mutating func inputWaiting(now: UInt64) -> Action {
    pingSentAt = nil
    return .sleep(until: now &+ interval)
  }
}
