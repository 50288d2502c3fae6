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
