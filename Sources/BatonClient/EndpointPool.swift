import BatonCore
import BatonPosix
import BatonTransport
import Synchronization

/// The client's connections: one per endpoint, replaced in the background when the server says
/// GOAWAY or the connection drops, and handed out round-robin to calls, skipping draining ones.
///
/// A call takes a ``Lease`` on a connection with a free stream slot (waiting, bounded, if there is
/// none) and returns it when done; the lease count is what keeps the client within each server's
/// MAX_CONCURRENT_STREAMS.
final class EndpointPool: Sendable {
  struct Lease: Sendable {
    let connection: Connection
    let endpoint: Int
  }

  private let endpoints: [Endpoint]
  private let configuration: Client.Configuration
  private let group: EventLoopGroup
  /// Each endpoint's connections live on one loop, chosen once (spread from a random start so
  /// that many clients share the loops).
  private let loops: [EventLoop]
  /// Where the pool's timers live: cancelling must name the loop that scheduled.
  private let timerLoop: EventLoop
  private let state: Locked<State>

  private struct State {
    var subchannels: [Subchannel]
    var waiters: [UInt64: Waiter] = [:]
    var waiterOrder: [UInt64] = []
    var nextWaiter: UInt64 = 0
    var cursor = 0
    var closed = false
    var leases: [ObjectIdentifier: Int] = [:]
    var closeWaiter: CheckedContinuation<Void, Never>?
    var readyWaiters: [UInt64: (minimum: Int, continuation: CheckedContinuation<Void, any Error>)] = [:]
    /// Waiters cancelled before they parked.
    var cancelledWaiters: Set<UInt64> = []
  }

  private struct Subchannel {
    var endpoint: Endpoint
    /// The connection new calls use; nil while (re)connecting.
    var current: Connection?
    var maxStreams = Int.max
    var connecting = false
    var failures = 0
    /// Connections that received GOAWAY: their calls run on, no new ones start there.
    var draining: [ObjectIdentifier: Connection] = [:]
    var lastError: String?
    /// Connection-limit refusals (GOAWAY with last stream 0, ENHANCE_YOUR_CALM) since a call
    /// last completed there: they arrive after SETTINGS, so they back off on their own count.
    var refusals = 0
    /// The connection being established (handshake not finished), if any.
    var pending: ObjectIdentifier?
    /// A reconnect timer is armed (a backoff runs): nothing else may connect before it fires.
    var reconnectScheduled = false

    /// The endpoint could not be reached: a TCP connect failed (refused, timed out, the name
    /// did not resolve), or two connections in a row broke before their handshake completed.
    /// One such break alone is retried first: it is as likely a race with the server's own
    /// close (or a local hiccup) as a dead endpoint. Sticky until a handshake completes.
    var failedToConnect = false

    /// No connection to offer and the endpoint could not be reached or is full: a call that
    /// does not wait for ready gives up on it. Sticky until a connection completes its
    /// handshake, so that the reconnects of a backoff do not make calls wait for each attempt.
    var unreachable: Bool { current == nil && (failedToConnect || refusals > 0) }
  }

  private struct Waiter {
    let continuation: CheckedContinuation<Lease, any Error>
    let avoiding: ObjectIdentifier?
    let timer: TimerHandle?
    /// Waits through connection failures (``CallOptions/waitForReady``) instead of failing fast.
    let waitForReady: Bool
  }

  init(endpoints: [Endpoint], configuration: Client.Configuration, group: EventLoopGroup) {
    self.endpoints = endpoints
    self.configuration = configuration
    self.group = group
    let start = Int.random(in: 0..<max(1, group.loops.count))
    self.loops = endpoints.indices.map { group.loops[(start + $0) % group.loops.count] }
    self.timerLoop = group.next()
    self.state = Locked(State(subchannels: endpoints.map { Subchannel(endpoint: $0) }))
    for index in endpoints.indices { connect(index) }
  }

  private var logger: Logger { configuration.logger }
  var endpointCount: Int { endpoints.count }

  /// The loop that carries an endpoint's connections.
  func loop(forEndpoint index: Int) -> EventLoop { loops[index % max(1, loops.count)] }

  // MARK: - Leases

  /// A connection with a free stream slot, preferring one that is not `avoiding` (the connection
  /// a retried call just failed on). Waits until `deadline` (MonotonicClock ns) if none is ready.
  ///
  /// Fails fast: without `waitForReady`, once every endpoint's last connect attempt failed (each
  /// has had at least one), the call fails with `unavailable` and the reasons, at once or as
  /// soon as the last pending attempt fails. With it, the call waits through reconnects.
  func lease(deadline: UInt64?, avoiding: ObjectIdentifier? = nil, waitForReady: Bool = false) async throws -> Lease {
    if let lease = try state.withLock({ s throws in
      let lease = try Self.pick(&s, avoiding: avoiding, strict: false)
      if lease == nil && !waitForReady, let error = Self.unreachableError(s) { throw error }
      return lease
    }) {
      return lease
    }
    // A call without a deadline still waits a bounded time for a connection.
    let limit = deadline == nil ? MonotonicClock.now() &+ configuration.maxWaitForConnection.nanoseconds : nil
    let id = state.withLock { s in
      defer { s.nextWaiter += 1 }
      return s.nextWaiter
    }
    let granted = try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        let outcome: Result<Lease, any Error>? = state.withLock { s in
          if s.cancelledWaiters.remove(id) != nil || Task.isCancelled {
            return .failure(
              RPCError(code: .cancelled, message: "the call was cancelled while waiting for a connection"))
          }
          do {
            if let lease = try Self.pick(&s, avoiding: avoiding, strict: false) { return .success(lease) }
          } catch {
            return .failure(error)
          }
          if !waitForReady, let error = Self.unreachableError(s) { return .failure(error) }
          guard s.waiters.count < configuration.maxWaitingCalls else {
            return .failure(
              RPCError(
                code: .resourceExhausted,
                message: "\(configuration.maxWaitingCalls) calls are already waiting for a connection"))
          }
          let timer = timerLoop.schedule(at: deadline ?? limit ?? 0) { [self] in
            self.expireWaiter(id, ownDeadline: deadline != nil)
          }
          s.waiters[id] = Waiter(
            continuation: continuation, avoiding: avoiding, timer: timer, waitForReady: waitForReady)
          s.waiterOrder.append(id)
          return nil
        }
        if let outcome { continuation.resume(with: outcome) }
      }
    } onCancel: {
      let waiter = state.withLock { s -> Waiter? in
        guard let waiter = s.waiters.removeValue(forKey: id) else {
          s.cancelledWaiters.insert(id)  // not parked yet: it will see this and not park
          return nil
        }
        return waiter
      }
      guard let waiter else { return }
      if let timer = waiter.timer { timerLoop.cancel(timer) }
      waiter.continuation.resume(
        throwing: RPCError(code: .cancelled, message: "the call was cancelled while waiting for a connection"))
    }
    // The lease came through a continuation, an ordering ThreadSanitizer cannot see (the
    // concurrency runtime is not instrumented): taking the pool's lock once orders this thread
    // after whoever stored the connection, for the sanitizer as it already is for the hardware.
    // The waiting path only; a lease picked at once was picked under the lock.
    state.withLock { _ in }
    return granted
  }

  /// Gives a lease back and lets the next waiting call have the slot. `streamOpened` says the
  /// server took a stream on it: proof it is not full any more.
  func release(_ lease: Lease, streamOpened: Bool = false) {
    let (grants, closeWaiter) = state.withLock { s in
      let key = ObjectIdentifier(lease.connection)
      if streamOpened && s.subchannels[lease.endpoint].refusals > 0 { s.subchannels[lease.endpoint].refusals = 0 }
      if let count = s.leases[key] { s.leases[key] = count > 1 ? count - 1 : nil }
      let grants = Self.grantWaiters(&s)
      if s.closed && s.leases.isEmpty, let waiter = s.closeWaiter {
        s.closeWaiter = nil
        return (grants, Optional(waiter))
      }
      return (grants, nil)
    }
    for (continuation, lease, timer) in grants {
      if let timer { timerLoop.cancel(timer) }
      continuation.resume(returning: lease)
    }
    closeWaiter?.resume()
  }

  private static func pick(_ s: inout State, avoiding: ObjectIdentifier?, strict: Bool) throws -> Lease? {
    if s.closed { throw RPCError(code: .unavailable, message: "the client is closed") }
    let count = s.subchannels.count
    var fallback: (Int, Connection)?
    for step in 0..<count {
      let index = (s.cursor + step) % count
      guard let connection = s.subchannels[index].current else { continue }
      let key = ObjectIdentifier(connection)
      guard s.leases[key, default: 0] < s.subchannels[index].maxStreams else { continue }
      if key == avoiding {
        fallback = fallback ?? (index, connection)
        continue
      }
      s.cursor = (index + 1) % count
      s.leases[key, default: 0] += 1
      return Lease(connection: connection, endpoint: index)
    }
    if !strict, let (index, connection) = fallback {
      s.leases[ObjectIdentifier(connection), default: 0] += 1
      return Lease(connection: connection, endpoint: index)
    }
    return nil
  }

  /// `unavailable` with every endpoint's last failure, when no endpoint can take a call now and
  /// each one's last connect attempt failed; nil while some endpoint is ready or still on its
  /// first attempt since it was last ready.
  private static func unreachableError(_ s: State) -> RPCError? {
    guard s.subchannels.allSatisfy(\.unreachable) else { return nil }
    if s.subchannels.isEmpty {
      return RPCError(code: .unavailable, message: "the client has no endpoints; the call was not sent")
    }
    let reasons = s.subchannels.map { "\($0.endpoint): \($0.lastError ?? "unreachable")" }.joined(separator: "; ")
    return RPCError(code: .unavailable, message: "no endpoint could be reached (\(reasons)); the call was not sent")
  }

  /// Fails the calls that do not wait for ready, once no endpoint can be reached.
  private func failFast() {
    let (failed, error) = state.withLock { s -> ([Waiter], RPCError?) in
      guard let error = Self.unreachableError(s) else { return ([], nil) }
      var failed: [Waiter] = []
      for (id, waiter) in s.waiters where !waiter.waitForReady {
        failed.append(waiter)
        s.waiters[id] = nil
      }
      return (failed, error)
    }
    guard let error else { return }
    for waiter in failed {
      if let timer = waiter.timer { timerLoop.cancel(timer) }
      waiter.continuation.resume(throwing: error)
    }
  }

  private static func grantWaiters(_ s: inout State) -> [(CheckedContinuation<Lease, any Error>, Lease, TimerHandle?)] {
    var grants: [(CheckedContinuation<Lease, any Error>, Lease, TimerHandle?)] = []
    while let id = s.waiterOrder.first {
      guard let waiter = s.waiters[id] else {
        s.waiterOrder.removeFirst()
        continue
      }
      guard let lease = try? pick(&s, avoiding: waiter.avoiding, strict: false) else { break }
      s.waiterOrder.removeFirst()
      s.waiters[id] = nil
      grants.append((waiter.continuation, lease, waiter.timer))
    }
    if s.waiterOrder.count > 64 && s.waiterOrder.count > 2 * s.waiters.count {
      s.waiterOrder.removeAll { s.waiters[$0] == nil }
    }
    return grants
  }

  private func expireWaiter(_ id: UInt64, ownDeadline: Bool) {
    let (waiter, detail) = state.withLock { s in
      let waiter = s.waiters.removeValue(forKey: id)
      let detail = s.subchannels.map {
        "\($0.endpoint): \($0.current != nil ? "busy" : ($0.lastError ?? "connecting"))"
      }
      .joined(separator: ", ")
      return (waiter, detail)
    }
    let error =
      ownDeadline
      ? RPCError(code: .deadlineExceeded, message: "the deadline passed while waiting for a ready endpoint (\(detail))")
      : RPCError(
        code: .unavailable,
        message:
          "no endpoint became ready within \(configuration.maxWaitForConnection) (\(detail)); the call was not sent")
    waiter?.continuation.resume(throwing: error)
  }

  private func grant() {
    let grants = state.withLock { Self.grantWaiters(&$0) }
    for (continuation, lease, timer) in grants {
      if let timer { timerLoop.cancel(timer) }
      continuation.resume(returning: lease)
    }
  }

  /// A connection refused a new stream (its GOAWAY crossed the call): stop handing it out. The
  /// GOAWAY's own notice decides when to reconnect (at once, or after a backoff when the server
  /// is full), so a call racing it cannot make the client reconnect in a loop.
  func markDraining(_ connection: Connection) {
    moveToDraining(connection, reconnect: false)
  }

  /// Whether the connection is still the one new calls go to.
  func isCurrent(_ connection: Connection) -> Bool {
    state.withLock { s in s.subchannels.contains { $0.current === connection } }
  }

  // MARK: - Connections

  private func connect(_ index: Int) {
    let endpoint = state.withLock { s -> Endpoint? in
      guard !s.closed, !s.subchannels[index].connecting, s.subchannels[index].current == nil else { return nil }
      s.subchannels[index].connecting = true
      s.subchannels[index].reconnectScheduled = false
      return s.subchannels[index].endpoint
    }
    guard let endpoint else { return }
    let loop = loops[index]
    Task {
      do {
        let (fd, peer) = try await Connector.connect(
          host: endpoint.host, port: endpoint.port, loop: loop, timeout: configuration.connectTimeout.nanoseconds)
        let connection = Connection(
          fd: fd, loop: loop, role: .client, peer: peer, settings: configuration.connection,
          limits: TransportLimits(maxBufferedBytes: configuration.maxBufferedBytesPerConnection)
        ) { [self] connection, notice in
          // Strong: the cycle ends when the connection closes and leaves the pool. (A weak
          // reference would slow every retain of this per-call object.)
          self.handle(notice, connection: connection, endpoint: index)
        }
        let keep = state.withLock { s in
          guard !s.closed else { return false }
          s.subchannels[index].draining[ObjectIdentifier(connection)] = connection  // held until ready
          s.subchannels[index].pending = ObjectIdentifier(connection)
          return true
        }
        connection.start()
        if !keep { connection.closeGracefully() }
      } catch {
        connectFailed(index, reason: "\(error)", unreachable: true)
      }
    }
  }

  /// An attempt failed: back off before the next. `unreachable`: the TCP connect itself failed;
  /// otherwise the connection broke before its handshake completed (see ``Subchannel/failedToConnect``).
  private func connectFailed(_ index: Int, reason: String, unreachable: Bool = false) {
    let delay = state.withLock { s -> UInt64? in
      s.subchannels[index].connecting = false
      s.subchannels[index].failures += 1
      s.subchannels[index].lastError = reason
      if unreachable || s.subchannels[index].failures >= 2 { s.subchannels[index].failedToConnect = true }
      if s.closed { return nil }
      s.subchannels[index].reconnectScheduled = true
      return configuration.backoff.delay(afterFailures: s.subchannels[index].failures)
    }
    guard let delay else { return }
    logger.log(.debug, "connect failed", ("endpoint", endpoints[index].description), ("error", reason))
    failFast()
    _ = timerLoop.schedule(at: MonotonicClock.now() &+ delay) { [self] in self.connect(index) }
  }

  private func handle(_ notice: Connection.Notice, connection: Connection, endpoint index: Int) {
    switch notice {
    case .ready(let settings):
      let closed = state.withLock { s in
        guard !s.closed else { return true }
        s.subchannels[index].draining[ObjectIdentifier(connection)] = nil
        s.subchannels[index].pending = nil
        s.subchannels[index].current = connection
        s.subchannels[index].maxStreams = Int(settings.maxConcurrentStreams)
        s.subchannels[index].connecting = false
        s.subchannels[index].failures = 0
        s.subchannels[index].failedToConnect = false
        s.subchannels[index].lastError = nil
        return false
      }
      if closed { return connection.closeGracefully() }
      logger.info("connected", ("endpoint", endpoints[index].description))
      grant()
      let ready = state.withLock { s in
        let count = s.subchannels.filter { $0.current != nil }.count
        let due = s.readyWaiters.filter { $0.value.minimum <= count }
        for key in due.keys { s.readyWaiters[key] = nil }
        return due.values.map(\.continuation)
      }
      for waiter in ready { waiter.resume() }
    case .goAway(let last, let code, let debug):
      logger.info("goaway", ("endpoint", endpoints[index].description), ("last_stream", "\(last)"), ("debug", debug))
      guard last == 0 && code == .enhanceYourCalm else { return moveToDraining(connection, reconnect: true) }
      // The server is full: try it again only after a backoff (PROTOCOL.md 14, "Reconnecting").
      moveToDraining(connection, reconnect: false)
      let delay = state.withLock { s in
        s.subchannels[index].refusals += 1
        s.subchannels[index].lastError = "connection limit: \(debug)"
        s.subchannels[index].reconnectScheduled = true
        return configuration.backoff.delay(afterFailures: s.subchannels[index].refusals)
      }
      failFast()
      _ = timerLoop.schedule(at: MonotonicClock.now() &+ delay) { [self] in self.connect(index) }
    case .closed(let reason):
      let (wasCurrent, wasPending, orphaned) = state.withLock { s in
        let key = ObjectIdentifier(connection)
        let wasCurrent = s.subchannels[index].current === connection
        let wasPending = s.subchannels[index].pending == key
        if wasPending { s.subchannels[index].pending = nil }
        if wasCurrent { s.subchannels[index].current = nil }
        s.subchannels[index].draining[key] = nil
        // A connection a call found dead (its open failed) was moved aside before this notice:
        // nothing replaces it unless this does.
        let sub = s.subchannels[index]
        let orphaned = !s.closed && sub.current == nil && !sub.connecting && !sub.reconnectScheduled
        return (wasCurrent, wasPending, orphaned)
      }
      if wasPending {
        connectFailed(index, reason: reason)
      } else if wasCurrent || orphaned {
        // An established connection ended the run of failures (PROTOCOL.md 14): reconnect at
        // once, and let calls wait for that one attempt before they fail fast.
        logger.info("disconnected", ("endpoint", endpoints[index].description), ("reason", reason))
        state.withLock { $0.subchannels[index].lastError = reason }
        connect(index)
      }
    case .opened, .pingAck, .idle:
      break
    }
  }

  private func moveToDraining(_ connection: Connection, reconnect: Bool) {
    let key = ObjectIdentifier(connection)
    let index = state.withLock { s -> Int? in
      guard
        let index = s.subchannels.firstIndex(where: { $0.current === connection || $0.draining[key] != nil })
      else { return nil }
      if s.subchannels[index].current === connection {
        s.subchannels[index].current = nil
        s.subchannels[index].draining[key] = connection
      }
      return index
    }
    // `connect` does nothing if a connection is already up or being made.
    if let index, reconnect { connect(index) }
  }

  /// Waits until at least `minimum` endpoints have a ready connection, or throws
  /// `deadlineExceeded` at `deadline`.
  func waitUntilReady(minimum: Int, deadline: UInt64) async throws {
    let id = state.withLock { s in
      defer { s.nextWaiter += 1 }
      return s.nextWaiter
    }
    let timer = timerLoop.schedule(at: deadline) { [self] in
      let waiter = self.state.withLock { $0.readyWaiters.removeValue(forKey: id) }
      waiter?.continuation.resume(
        throwing: RPCError(code: .deadlineExceeded, message: "fewer than \(minimum) endpoints became ready in time"))
    }
    defer { timerLoop.cancel(timer) }
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
      let outcome: Result<Void, any Error>? = state.withLock { s in
        if s.subchannels.filter({ $0.current != nil }).count >= minimum { return .success(()) }
        // The timer runs on a loop thread and may have come and gone before this parks (it
        // found no waiter): a deadline that has passed is final, or the wait would never end.
        if MonotonicClock.now() >= deadline {
          return .failure(
            RPCError(code: .deadlineExceeded, message: "fewer than \(minimum) endpoints became ready in time"))
        }
        s.readyWaiters[id] = (minimum, continuation)
        return nil
      }
      if let outcome { continuation.resume(with: outcome) }
    }
  }

  /// Per-endpoint view: whether a connection is ready, how many calls it carries.
  var snapshot: [(endpoint: Endpoint, ready: Bool, calls: Int, draining: Int)] {
    state.withLock { s in
      s.subchannels.map { sub in
        (
          sub.endpoint, sub.current != nil, sub.current.map { s.leases[ObjectIdentifier($0), default: 0] } ?? 0,
          sub.draining.count
        )
      }
    }
  }

  /// Calls parked waiting for a connection (for tests that must act only once a call waits).
  var waitingCalls: Int { state.withLock { $0.waiters.count } }

  /// For diagnostics (a hung test's watchdog): leases held, calls waiting, and every connection.
  var debugState: String {
    state.withLock { s in
      let subchannels = s.subchannels.map { sub -> String in
        var lines = ["  \(sub.endpoint): \(sub.connecting ? "connecting" : "not connecting"), failures \(sub.failures)"]
        if let error = sub.lastError { lines[0] += ", last error: \(error)" }
        if let current = sub.current {
          lines.append("    current (\(s.leases[ObjectIdentifier(current), default: 0]) leases): \(current.debugState)")
        }
        for connection in sub.draining.values {
          let role = sub.pending == ObjectIdentifier(connection) ? "pending" : "draining"
          lines.append(
            "    \(role) (\(s.leases[ObjectIdentifier(connection), default: 0]) leases): \(connection.debugState)")
        }
        return lines.joined(separator: "\n")
      }
      let leases = s.leases.values.reduce(0, +)
      let header =
        "pool: \(s.closed ? "closed" : "open"), \(leases) leases, \(s.waiters.count) waiting calls, "
        + "\(s.readyWaiters.count) ready waiters, close \(s.closeWaiter != nil ? "waiting for leases" : "not waiting")"
      return ([header] + subchannels).joined(separator: "\n")
    }
  }

  /// No new calls; waits for running ones, then closes every connection.
  func close() async {
    let waiters = state.withLock { s in
      s.closed = true
      defer {
        s.waiters.removeAll()
        s.waiterOrder.removeAll()
      }
      return Array(s.waiters.values)
    }
    for waiter in waiters {
      waiter.continuation.resume(throwing: RPCError(code: .unavailable, message: "the client is closed"))
    }
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = state.withLock { s in
        if s.leases.isEmpty { return true }
        s.closeWaiter = continuation
        return false
      }
      if done { continuation.resume() }
    }
    let connections = state.withLock { s in
      s.subchannels.flatMap { sub in (sub.current.map { [$0] } ?? []) + Array(sub.draining.values) }
    }
    for connection in connections { connection.closeGracefully(linger: 200_000_000) }
    // Returns once every socket is closed, so that what the client owes (a RESET, a GOAWAY
    // after a protocol violation) is on the wire before, say, the process exits (PROTOCOL.md 13.4).
    for connection in connections { await connection.waitUntilClosed() }
  }
}
