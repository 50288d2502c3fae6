import BatonCore

/// The server's lifecycle as a value: `idle → running → draining → cancelling → closing → stopped`.
///
/// Every stop, graceful or not, walks this one path; a hard stop just skips ahead. The owner
/// performs the I/O each transition calls for. Transitions that do not apply return false (or
/// `.none`) so that racing callers (a signal, a deadline timer, task cancellation) are harmless.
struct ServerLifecycle: Hashable, Sendable {
  enum State: Hashable, Sendable {
    case idle
    case running
    /// GOAWAYs are out; open streams run to completion until the deadline.
    case draining
    /// The deadline passed (or a hard stop): remaining handlers are cancelled and cut.
    case cancelling
    /// Connections are gone; shutdown hooks run.
    case closing
    case stopped
  }

  private(set) var state: State = .idle

  /// `run()` began. False if the server already ran (a server runs once).
  mutating func start() -> Bool {
    guard state == .idle else { return false }
    state = .running
    return true
  }

  enum BeginStop: Hashable, Sendable {
    /// Start the drain sequence.
    case drain
    /// The server never ran: it is stopped now and `run()` will return at once.
    case stoppedBeforeStart
    /// A stop is already under way (or done): nothing to do.
    case none
  }

  mutating func beginGracefulStop() -> BeginStop {
    switch state {
    case .idle:
      state = .stopped
      return .stoppedBeforeStart
    case .running:
      state = .draining
      return .drain
    case .draining, .cancelling, .closing, .stopped:
      return .none
    }
  }

  enum HardStop: Hashable, Sendable {
    /// The server was running: drain with a deadline of now.
    case drainAndCut
    /// Already draining: cut now.
    case cut
    case stoppedBeforeStart
    case none
  }

  /// A second signal or task cancellation: stop at once.
  mutating func hardStop() -> HardStop {
    switch state {
    case .idle:
      state = .stopped
      return .stoppedBeforeStart
    case .running:
      state = .cancelling
      return .drainAndCut
    case .draining:
      state = .cancelling
      return .cut
    case .cancelling, .closing, .stopped:
      return .none
    }
  }

  /// The drain deadline passed with streams still open.
  mutating func deadlinePassed() -> Bool {
    guard state == .draining else { return false }
    state = .cancelling
    return true
  }

  /// Every connection has closed: time for the hooks.
  mutating func connectionsClosed() -> Bool {
    guard state == .draining || state == .cancelling else { return false }
    state = .closing
    return true
  }

  mutating func hooksFinished() -> Bool {
    guard state == .closing else { return false }
    state = .stopped
    return true
  }

  enum Accept: Hashable, Sendable {
    case serve
    /// Accepted during a drain (it raced the listener's close): serve it, but GOAWAY at once.
    case serveDraining
    case reject
  }

  var acceptDecision: Accept {
    switch state {
    case .running: .serve
    case .draining: .serveDraining
    case .idle, .cancelling, .closing, .stopped: .reject
    }
  }

  /// Whether a readiness probe should say "ready".
  var isReady: Bool { state == .running }
}

/// One connection's part in a graceful stop (PROTOCOL.md, "Graceful stop"):
/// `serving → awaitingBarrier → finalGoAwaySent → closing`.
struct ConnectionDrain: Hashable, Sendable {
  enum State: Hashable, Sendable {
    case serving
    /// GOAWAY(2^31-1) and a PING are out; waiting for the PING's ACK or the bounded timer.
    case awaitingBarrier(ping: UInt64)
    /// The final GOAWAY (real last id) is out; waiting for the streams to end.
    case finalGoAwaySent(lastStreamID: UInt32)
    case closing
  }

  private(set) var state: State = .serving

  /// Begins the drain with a barrier PING carrying `ping`. False if it already began.
  mutating func begin(ping: UInt64) -> Bool {
    guard state == .serving else { return false }
    state = .awaitingBarrier(ping: ping)
    return true
  }

  /// The barrier passed: the ACK of our PING (`ack`), or the timer (`ack == nil`). True when the
  /// final GOAWAY should go out now; an ACK of some other PING is not the barrier.
  mutating func barrierPassed(ack: UInt64?) -> Bool {
    guard case .awaitingBarrier(let ping) = state else { return false }
    if let ack, ack != ping { return false }
    return true
  }

  /// Records the final GOAWAY; a drain already closing (a hard stop got there first) stays so.
  mutating func finalGoAwaySent(lastStreamID: UInt32) {
    guard state != .closing else { return }
    state = .finalGoAwaySent(lastStreamID: lastStreamID)
  }

  /// Whether the connection may close now: only after the final GOAWAY, once no call is active.
  mutating func mayClose(activeCalls: Int) -> Bool {
    guard case .finalGoAwaySent = state, activeCalls == 0 else { return false }
    state = .closing
    return true
  }

  /// A hard stop closes regardless of phase.
  mutating func forceClosing() { state = .closing }

  var isDraining: Bool { state != .serving }
}
