import BatonCore

/// One server connection's management as a value: its drain (PROTOCOL.md 13.2, `serving →
/// awaitingBarrier → finalGoAwaySent → closing`), the round trip its first PING measures (the
/// drain barrier's wait), max age, idleness and keepalive.
///
/// It owns no socket, clock or timer: the server feeds it events (accepted, a PING's ACK, a
/// timer that fired, the connection going idle) with what it observed (the time, the calls
/// still active, when bytes last arrived) and performs the actions it returns, outside any
/// lock. So every decision is here, in one place, and unit-tested without sockets; the server's
/// part is plumbing. (PING policing is the connection core's: it is about frames, not policy.)
struct ConnectionManager: Sendable {
  /// What the server's configuration asks of every connection, in nanoseconds.
  struct Policy: Sendable, Hashable {
    /// Age at which the connection drains (already jittered for this connection), if any.
    var maxAge: UInt64?
    /// How long a connection drained for its age may run on before its calls are cut.
    var maxAgeGrace: UInt64 = 0
    /// Time without calls after which the connection drains, if any.
    var idleTimeout: UInt64?
    /// Time without inbound bytes after which a keepalive PING goes out, if any.
    var keepaliveInterval: UInt64?
    /// How long a keepalive PING may go unanswered before the connection is closed.
    var keepaliveTimeout: UInt64 = 0
    /// The longest wait for the barrier PING's ACK; 0 skips the barrier's wait.
    var barrierCap: UInt64 = 1_000_000_000
  }

  /// The connection's timers, at most one of each.
  enum Timer: Hashable, Sendable {
    case maxAge, maxAgeGrace, idle, keepalive, keepaliveTimeout, barrier
  }

  /// What the server should do, in order.
  enum Action: Hashable, Sendable {
    /// Send a PING with this payload.
    case ping(UInt64)
    /// Send GOAWAY(2^31-1) (the drain's first phase) and report the connection's idleness from
    /// now on.
    case goAway
    /// Send the final GOAWAY (the highest stream id the client opened) and report its id with
    /// ``ConnectionManager/finalGoAwaySent(lastStreamID:activeCalls:)``.
    case finalGoAway
    /// Close once the last frame is out (FIN, not RST).
    case close
    /// Close at once with GOAWAY(NO_ERROR) carrying `reason`.
    case abort(reason: String)
    /// End every open call with `unavailable` and `reason`, then close.
    case cut(reason: String)
    /// Arm (or re-arm) a timer to fire at a MonotonicClock time.
    case arm(Timer, at: UInt64)
    /// Log this lifecycle event with the connection's peer.
    case log(String)
  }

  /// The drain's phase.
  enum Phase: Hashable, Sendable, CustomStringConvertible {
    case serving
    /// GOAWAY(2^31-1) and the barrier PING are out; waiting for its ACK or the barrier timer.
    case awaitingBarrier
    /// The final GOAWAY (real last id) is out; waiting for the streams to end.
    case finalGoAwaySent(lastStreamID: UInt32)
    case closing

    /// `serving`, `awaitingBarrier`, `finalGoAwaySent` or `closing` (as `/drainz` shows it).
    var description: String {
      switch self {
      case .serving: "serving"
      case .awaitingBarrier: "awaitingBarrier"
      case .finalGoAwaySent: "finalGoAwaySent"
      case .closing: "closing"
      }
    }
  }

  /// The first PING on every connection measures its round trip.
  static let rttProbe: UInt64 = 0x6261_746f_6e72_7474
  /// Keepalive PINGs.
  static let keepaliveProbe: UInt64 = 0x6261_746f_6e6b_616c
  /// The drain's barrier PING (one drain per connection, so one payload does).
  static let barrierProbe: UInt64 = 0x6261_746f_6e62_6172

  let policy: Policy
  /// When the connection was accepted (and the RTT probe sent).
  let acceptedAt: UInt64
  private(set) var phase = Phase.serving
  /// The round trip the first PING measured, once its ACK came.
  private(set) var rtt: UInt64?
  /// When the drain began: its duration ends when the connection closes.
  private(set) var drainStartedAt: UInt64?
  /// When the last keepalive PING went out.
  private var keepaliveSentAt: UInt64 = 0

  init(policy: Policy, acceptedAt: UInt64) {
    self.policy = policy
    self.acceptedAt = acceptedAt
  }

  /// Whether the drain has begun.
  var isDraining: Bool { phase != .serving }

  /// The connection was admitted: measure its round trip, arm its hygiene timers, and drain at
  /// once if the server already is (`draining`).
  mutating func start(draining: Bool) -> [Action] {
    var actions: [Action] = [.ping(Self.rttProbe)]
    if draining { actions += beginDrain(now: acceptedAt) }
    if let maxAge = policy.maxAge { actions.append(.arm(.maxAge, at: acceptedAt &+ maxAge)) }
    if let idle = policy.idleTimeout { actions.append(.arm(.idle, at: acceptedAt &+ idle)) }
    if let interval = policy.keepaliveInterval { actions.append(.arm(.keepalive, at: acceptedAt &+ interval)) }
    return actions
  }

  /// Phase one of the drain: GOAWAY(2^31-1) and the barrier PING, with a timer of four measured
  /// round trips (at least 10 ms, at most the cap; the cap alone before a round trip is known).
  /// Nothing if the drain already began.
  mutating func beginDrain(now: UInt64) -> [Action] {
    guard phase == .serving else { return [] }
    phase = .awaitingBarrier
    drainStartedAt = now
    let cap = policy.barrierCap
    let wait = min(cap, max(10_000_000, (rtt ?? cap) &* 4))
    return [.goAway, .ping(Self.barrierProbe), .arm(.barrier, at: now &+ wait)]
  }

  /// A PING's ACK: the round trip, the barrier, or a keepalive answer (whose bytes already
  /// count as inbound activity).
  mutating func pingAck(_ payload: UInt64, now: UInt64) -> [Action] {
    switch payload {
    case Self.rttProbe:
      rtt = now &- acceptedAt
      return []
    case Self.keepaliveProbe:
      return []
    default:
      return barrierPassed(ack: payload)
    }
  }

  /// Phase two: the barrier passed (its ACK, or the timer with `ack == nil`); the final GOAWAY
  /// goes out. An ACK of another PING is not the barrier.
  mutating func barrierPassed(ack: UInt64?) -> [Action] {
    guard phase == .awaitingBarrier else { return [] }
    if let ack, ack != Self.barrierProbe { return [] }
    phase = .finalGoAwaySent(lastStreamID: 0)
    return [.finalGoAway]
  }

  /// The final GOAWAY went out naming `lastStreamID`; closes at once if no call is active. A
  /// drain already closing (a hard stop got there first) stays so.
  mutating func finalGoAwaySent(lastStreamID: UInt32, activeCalls: Int) -> [Action] {
    guard phase != .closing else { return [] }
    phase = .finalGoAwaySent(lastStreamID: lastStreamID)
    return idle(activeCalls: activeCalls)
  }

  /// The last active call ended (or may have): close if the final GOAWAY is out.
  mutating func idle(activeCalls: Int) -> [Action] {
    guard case .finalGoAwaySent = phase, activeCalls == 0 else { return [] }
    phase = .closing
    return [.close]
  }

  /// A hard stop closes regardless of phase.
  mutating func forceClosing() { phase = .closing }

  /// What the connection looks like when a timer fires.
  struct Observation: Sendable {
    var now: UInt64
    /// When bytes last arrived.
    var lastInboundAt: UInt64
    /// Calls still active.
    var activeCalls: Int
    /// When the last call ended (0 if none has).
    var lastCallEndedAt: UInt64
  }

  mutating func timerFired(_ timer: Timer, _ seen: Observation) -> [Action] {
    switch timer {
    case .maxAge:
      return [.log("connection max age")] + beginDrain(now: seen.now)
        + [.arm(.maxAgeGrace, at: seen.now &+ policy.maxAgeGrace)]
    case .maxAgeGrace:
      return [.cut(reason: "the connection reached its maximum age and its grace period passed")]
    case .idle:
      guard let idle = policy.idleTimeout else { return [] }
      let lastUse = max(acceptedAt, seen.lastCallEndedAt)
      if seen.activeCalls == 0 && seen.now &- lastUse >= idle {
        return [.log("connection idle")] + beginDrain(now: seen.now)
      }
      return [.arm(.idle, at: seen.activeCalls == 0 ? lastUse &+ idle : seen.now &+ idle)]
    case .keepalive:
      guard let interval = policy.keepaliveInterval else { return [] }
      guard seen.now &- seen.lastInboundAt >= interval else {
        return [.arm(.keepalive, at: seen.lastInboundAt &+ interval)]
      }
      keepaliveSentAt = seen.now
      return [.ping(Self.keepaliveProbe), .arm(.keepaliveTimeout, at: seen.now &+ policy.keepaliveTimeout)]
    case .keepaliveTimeout:
      if seen.lastInboundAt > keepaliveSentAt { return timerFired(.keepalive, seen) }
      return [.log("connection keepalive timeout"), .abort(reason: "keepalive timeout: no answer to a PING")]
    case .barrier:
      return barrierPassed(ack: nil)
    }
  }
}
