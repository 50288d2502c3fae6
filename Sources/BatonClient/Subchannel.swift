/// One address's connections, as a value: which connection new calls go to, which ones still
/// finish calls after a GOAWAY, and when to connect again.
///
/// The pool owns one per resolved address, changes it under its lock and carries out the
/// ``Action``s it returns (connect now, reconnect after a delay). Being a value over any class
/// type, it is tested without sockets.
///
/// ```
/// idle ──connect──▶ connecting ──handshake──▶ ready ──GOAWAY / lost──▶ connecting (at once)
///   ▲                   │ failed                 │ a call found it refusing
///   │                   ▼                        ▼
///   └── (timer) ◀── backingOff ◀── limit GOAWAY   idle (its GOAWAY or close decides)
///                                    any state ──removed / client closed──▶ shutdown
/// ```
struct Subchannel<Connection: AnyObject> {
  enum State {
    /// No connection and none being made: before the first connect, or after a call found the
    /// current connection refusing streams, until that connection's GOAWAY or close says more.
    case idle
    /// A TCP connect and then the handshake are under way; `pending` once the socket is up.
    case connecting(pending: Connection?)
    /// New calls go to this connection, at most `maxStreams` at once.
    case ready(Connection, maxStreams: Int)
    /// The last attempt failed (or the server is full): a reconnect timer is armed.
    case backingOff
    /// Removed from the address set, or the client closed: it never connects again.
    case shutdown
  }

  /// What the pool must do after a transition.
  enum Action: Equatable {
    case none
    /// Start a connect now (the state is already `connecting`).
    case connect
    /// Arm a timer; when it fires, call ``reconnectDue()``.
    case reconnect(afterNanoseconds: UInt64)
  }

  let endpoint: Endpoint
  private(set) var state: State = .idle
  /// Connections that received GOAWAY (or were set aside): their calls run on, no new ones start.
  private(set) var draining: [ObjectIdentifier: Connection] = [:]
  /// Failed connects in a row; a completed handshake resets it.
  private(set) var failures = 0
  /// Connection-limit refusals (GOAWAY(0, ENHANCE_YOUR_CALM)) since a stream last opened here.
  private(set) var refusals = 0
  private(set) var lastError: String?
  /// The endpoint could not be reached: a TCP connect failed, or two connections in a row broke
  /// before their handshake completed (one alone is as likely a race with the server's own
  /// close as a dead endpoint). Sticky until a handshake completes, so that the attempts of a
  /// backoff do not make fail-fast calls wait for each one.
  private(set) var failedToConnect = false

  init(endpoint: Endpoint) { self.endpoint = endpoint }

  // MARK: - Views

  /// The connection new calls go to, and its stream limit.
  var ready: (connection: Connection, maxStreams: Int)? {
    if case .ready(let connection, let maxStreams) = state { return (connection, maxStreams) }
    return nil
  }

  var isShutDown: Bool { if case .shutdown = state { true } else { false } }

  /// No connection to offer and the address could not be reached or is full: a call that does
  /// not wait for ready gives up on it.
  var unreachable: Bool {
    switch state {
    case .ready: false
    case .shutdown: true
    case .idle, .connecting, .backingOff: failedToConnect || refusals > 0
    }
  }

  /// Shut down and holding no connection: the pool may forget it.
  var isFinished: Bool { isShutDown && draining.isEmpty }

  /// Every connection it holds (the ready one, the pending one, the draining ones).
  var connections: [Connection] {
    var all = Array(draining.values)
    switch state {
    case .ready(let connection, _): all.append(connection)
    case .connecting(let pending?): all.append(pending)
    default: break
    }
    return all
  }

  /// Whether `connection` is one of this address's.
  func owns(_ connection: Connection) -> Bool {
    let key = ObjectIdentifier(connection)
    if draining[key] != nil { return true }
    switch state {
    case .ready(let current, _): return current === connection
    case .connecting(let pending?): return pending === connection
    default: return false
    }
  }

  // MARK: - Transitions

  /// Starts a connect if nothing is connected or being made, and no backoff runs.
  mutating func connectIfIdle() -> Action {
    guard case .idle = state else { return .none }
    state = .connecting(pending: nil)
    return .connect
  }

  /// The backoff timer fired.
  mutating func reconnectDue() -> Action {
    guard case .backingOff = state else { return .none }
    state = .connecting(pending: nil)
    return .connect
  }

  /// The TCP connect succeeded; the handshake follows. false: the address was shut down
  /// meanwhile, and the caller closes the connection.
  mutating func socketConnected(_ connection: Connection) -> Bool {
    guard case .connecting(nil) = state else { return false }
    state = .connecting(pending: connection)
    return true
  }

  /// A connect attempt failed. `unreachable`: the TCP connect itself failed (refused, timed
  /// out, the name did not resolve); otherwise the connection broke before its handshake.
  mutating func connectFailed(reason: String, unreachable: Bool, backoff: Client.Backoff) -> Action {
    failures += 1
    lastError = reason
    if unreachable || failures >= 2 { failedToConnect = true }
    guard case .connecting = state else { return .none }
    state = .backingOff
    return .reconnect(afterNanoseconds: backoff.delay(afterFailures: failures))
  }

  /// The handshake completed: new calls may go here. false: not the connection this address
  /// waits for (shut down meanwhile); the caller closes it.
  mutating func handshakeCompleted(_ connection: Connection, maxStreams: Int) -> Bool {
    guard case .connecting(let pending?) = state, pending === connection else { return false }
    state = .ready(connection, maxStreams: maxStreams)
    failures = 0
    failedToConnect = false
    lastError = nil
    return true
  }

  /// A call found `connection` refusing new streams (GOAWAY crossed it): stop handing it out.
  /// Its own GOAWAY or close decides when to reconnect, so a call racing it cannot make the
  /// client reconnect in a loop.
  mutating func setAside(_ connection: Connection) {
    guard case .ready(let current, _) = state, current === connection else { return }
    draining[ObjectIdentifier(connection)] = connection
    state = .idle
  }

  /// The server sent GOAWAY on `connection`. `refusal`: GOAWAY(0, ENHANCE_YOUR_CALM), the server
  /// is full, which counts as a failed connect for backoff (PROTOCOL.md 14, "Reconnecting");
  /// otherwise the address reconnects at once.
  mutating func goAway(_ connection: Connection, refusal: Bool, debug: String, backoff: Client.Backoff) -> Action {
    guard owns(connection) else { return .none }
    switch state {
    case .ready(let current, _) where current === connection:
      draining[ObjectIdentifier(connection)] = connection
      state = .idle
    case .connecting(let pending?) where pending === connection:
      draining[ObjectIdentifier(connection)] = connection
      state = .idle
    default:
      break
    }
    if refusal {
      refusals += 1
      lastError = "connection limit: \(debug)"
      guard case .idle = state else { return .none }
      state = .backingOff
      return .reconnect(afterNanoseconds: backoff.delay(afterFailures: refusals))
    }
    return connectIfIdle()
  }

  /// `connection`'s socket closed.
  mutating func closed(_ connection: Connection, reason: String, backoff: Client.Backoff) -> Action {
    let key = ObjectIdentifier(connection)
    switch state {
    case .connecting(let pending?) where pending === connection:
      state = .connecting(pending: nil)
      return connectFailed(reason: reason, unreachable: false, backoff: backoff)
    case .ready(let current, _) where current === connection:
      // An established connection ended the run of failures (PROTOCOL.md 14): reconnect at once,
      // and let calls wait for that one attempt before they fail fast.
      lastError = reason
      state = .connecting(pending: nil)
      return .connect
    default:
      guard draining.removeValue(forKey: key) != nil else { return .none }
      // A connection set aside by a call leaves the address idle: nothing replaces it unless this does.
      if case .idle = state { lastError = reason }
      return connectIfIdle()
    }
  }

  /// A stream opened here: the server is not full any more.
  mutating func streamOpened() { refusals = 0 }

  /// No new connection ever; returns the connections to close gracefully (their calls finish).
  /// They stay listed as draining until their close is reported.
  mutating func shutDown() -> [Connection] {
    switch state {
    case .ready(let connection, _): draining[ObjectIdentifier(connection)] = connection
    case .connecting(let pending?): draining[ObjectIdentifier(pending)] = pending
    default: break
    }
    state = .shutdown
    return Array(draining.values)
  }
}
