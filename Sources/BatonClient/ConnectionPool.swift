import BatonCore
import BatonPosix
import BatonTransport
import Synchronization

/// The client's connections: the resolver's addresses, one ``Subchannel`` each, a ``Picker``
/// over their ready connections, and the calls waiting for one.
///
/// A call takes a ``Lease`` on a connection with a free stream slot (waiting, bounded, if there is
/// none) and returns it when done; the lease count is what keeps the client within each server's
/// MAX_CONCURRENT_STREAMS and what the least-loaded picker compares.
///
/// Every decision is taken under one lock; continuations are resumed, connections started and
/// timers armed after it is released.
final class ConnectionPool: Sendable {
  struct Lease: Sendable {
    let connection: Connection
    /// The subchannel (address) it belongs to.
    let address: UInt64
  }

  private let resolver: any Resolver
  private let configuration: Client.Configuration
  private let group: EventLoopGroup
  /// Where the pool's own timers live (waiter deadlines, backoff, resolution).
  private let timerLoop: EventLoop
  private let firstLoop: EventLoop
  private let state: Locked<State>

  /// One address and the loop its connections live on (chosen once, spread over the group).
  private struct Entry {
    let id: UInt64
    let loop: EventLoop
    var channel: Subchannel<Connection>
    /// Doubled after a "too many pings" GOAWAY from this server (PROTOCOL.md 15).
    var keepaliveInterval: UInt64
    /// Counts for ``Client/EndpointState``.
    var attempts = 0
    var goAways = 0
    var connectionsLost = 0
    /// Bytes its connections read and wrote (nil with metrics off).
    let traffic: TrafficCounters?
  }

  private struct Waiter {
    let continuation: CheckedContinuation<Lease, any Error>
    let avoiding: ObjectIdentifier?
    let timer: TimerHandle?
    /// Waits through connection failures (``CallOptions/waitForReady``) instead of failing fast.
    let waitForReady: Bool
  }

  private struct State {
    var entries: [Entry] = []
    var nextEntryID: UInt64 = 0
    var loopCursor: Int
    var picker: Picker
    /// Scratch space for the picker, reused by every call (no allocation per pick).
    var candidates: [Picker.Candidate] = []
    var candidateOwners: [(entry: Int, connection: Connection)] = []
    var leases: [ObjectIdentifier: Int] = [:]
    var waiters = WaitQueue<Waiter>()
    /// `waitUntilReady` callers: how many ready addresses each wants (nil: all of them).
    var readyWaiters: [UInt64: (minimum: Int?, continuation: CheckedContinuation<Void, any Error>)] = [:]
    var keepalives: [ObjectIdentifier: Keepalive] = [:]
    /// Connections silent with calls waiting, a keepalive PING unanswered: they get no new call
    /// while another connection can take it, so a frozen server stops receiving calls after
    /// one keepalive interval, not after the whole timeout.
    var suspects: Set<ObjectIdentifier> = []
    var throttle: RetryThrottle
    var closed = false
    var closeWaiter: CheckedContinuation<Void, Never>?
    /// The resolver has answered at least once (successfully or not).
    var resolved = false
    var resolving = false
    var lastResolutionStart: UInt64 = 0
    var resolutionError: String?
    var resolveTimer: TimerHandle?
  }

  init(resolver: any Resolver, configuration: Client.Configuration, group: EventLoopGroup) {
    self.resolver = resolver
    self.configuration = configuration
    self.group = group
    let start = Int.random(in: 0..<max(1, group.loops.count))
    self.firstLoop = group.loops[start % max(1, group.loops.count)]
    self.timerLoop = group.next()
    self.state = Locked(
      State(
        loopCursor: start, picker: Picker(policy: configuration.loadBalancing),
        throttle: RetryThrottle(configuration.retryBudget)))
    // Numeric addresses need no lookup: their connections start now, before the first call.
    let known: [Endpoint]? =
      switch resolver {
      case let fixed as StaticResolver: fixed.endpoints
      case let dns as DNSResolver: DNSResolver.numeric(dns.targets)
      default: nil
      }
    if let known {
      apply(resolved: known)
    } else {
      resolveNow()
    }
    scheduleResolution()
  }

  private var logger: Logger { configuration.logger }
  /// Addresses currently in use (not removed by the resolver).
  var endpointCount: Int { state.withLock { s in s.entries.count { !$0.channel.isShutDown } } }

  /// The loop that carries the first address's connection.
  var preferredLoop: EventLoop { firstLoop }

  // MARK: - Leases

  /// A connection with a free stream slot, preferring one that is not `avoiding` (the connection
  /// a retried call just failed on). Waits until `deadline` (MonotonicClock ns) if none is ready.
  ///
  /// Fails fast: without `waitForReady`, once every address's last connect attempt failed (each
  /// has had at least one), the call fails with `unavailable` and the reasons, at once or as
  /// soon as the last pending attempt fails. With it, the call waits through reconnects.
  ///
  /// `newCall`: this is a call's first lease, which the retry budget counts (here, under the lock
  /// the lease takes anyway), at `now` (the call's start) if given.
  func lease(
    deadline: UInt64?, avoiding: ObjectIdentifier? = nil, waitForReady: Bool = false, newCall: Bool = false,
    now callStart: UInt64? = nil
  ) async throws -> Lease {
    let now = newCall ? callStart ?? MonotonicClock.now() : 0
    if let lease = try state.withLock({ s throws in
      if newCall { s.throttle.recordCall(now: now) }
      let lease = try Self.pick(&s, avoiding: avoiding)
      if lease == nil && !waitForReady, let error = Self.unreachableError(s) { throw error }
      return lease
    }) {
      return lease
    }
    // A call without a deadline still waits a bounded time for a connection.
    let limit = deadline ?? MonotonicClock.now() &+ configuration.maxWaitForConnection.nanoseconds
    let id = state.withLock { $0.waiters.reserveID() }
    let granted = try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        let outcome: Result<Lease, any Error>? = state.withLock { s in
          if s.waiters.wasCancelledEarly(id) || Task.isCancelled {
            return .failure(
              RPCError(code: .cancelled, message: "the call was cancelled while waiting for a connection"))
          }
          do {
            if let lease = try Self.pick(&s, avoiding: avoiding) { return .success(lease) }
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
          let timer = timerLoop.schedule(at: limit) { [self] in
            self.expireWaiter(id, ownDeadline: deadline != nil)
          }
          s.waiters.park(
            id, Waiter(continuation: continuation, avoiding: avoiding, timer: timer, waitForReady: waitForReady))
          return nil
        }
        if let outcome { continuation.resume(with: outcome) }
      }
    } onCancel: {
      guard let waiter = state.withLock({ $0.waiters.remove(id, cancelling: true) }) else { return }
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
    let (grants, closeWaiter, retire) = state.withLock { s in
      let key = ObjectIdentifier(lease.connection)
      var retire = false
      if let count = s.leases[key], count > 1 {
        s.leases[key] = count - 1
      } else {
        s.leases[key] = nil
        // The last call on a connection of a removed address: it has nothing left to finish.
        retire = s.entries.contains { $0.channel.isShutDown && $0.channel.owns(lease.connection) }
      }
      if streamOpened, let index = s.entries.firstIndex(where: { $0.id == lease.address }) {
        s.entries[index].channel.streamOpened()
        // Counted as the attempt ends, and only for a stream that opened: a lease whose
        // connection refused the stream locally (a GOAWAY had just arrived) sent nothing there.
        s.entries[index].attempts += 1
      }
      let grants = s.waiters.isEmpty ? [] : Self.grantWaiters(&s)
      if s.closed && s.leases.isEmpty, let waiter = s.closeWaiter {
        s.closeWaiter = nil
        return (grants, Optional(waiter), retire)
      }
      return (grants, nil, retire)
    }
    resume(grants)
    closeWaiter?.resume()
    if retire { lease.connection.closeGracefully(linger: 200_000_000) }
  }

  /// Takes one retry that is not free (the call may have been processed) from the client-wide
  /// budget; false once it is spent.
  func mayRetryCostly() -> Bool {
    let now = MonotonicClock.now()
    return state.withLock { $0.throttle.tryRetry(now: now) }
  }

  private static func pick(_ s: inout State, avoiding: ObjectIdentifier?) throws -> Lease? {
    if s.closed { throw RPCError(code: .unavailable, message: "the client is closed") }
    var chosen = choose(&s, avoiding: avoiding, skippingSuspects: !s.suspects.isEmpty)
    if chosen == nil && !s.suspects.isEmpty {
      chosen = choose(&s, avoiding: avoiding, skippingSuspects: false)  // only suspects have room
    }
    guard let chosen else { return nil }
    let (index, connection) = s.candidateOwners[chosen]
    s.leases[ObjectIdentifier(connection), default: 0] += 1
    return Lease(connection: connection, address: s.entries[index].id)
  }

  /// Lets the picker choose among the ready connections (scratch arrays in the state: no
  /// allocation per call); the chosen index is into `s.candidateOwners`.
  private static func choose(_ s: inout State, avoiding: ObjectIdentifier?, skippingSuspects: Bool) -> Int? {
    s.candidates.removeAll(keepingCapacity: true)
    s.candidateOwners.removeAll(keepingCapacity: true)
    for index in s.entries.indices {
      guard let (connection, maxStreams) = s.entries[index].channel.ready else { continue }
      let key = ObjectIdentifier(connection)
      if skippingSuspects && s.suspects.contains(key) { continue }
      s.candidates.append(Picker.Candidate(key: key, load: s.leases[key, default: 0], capacity: maxStreams))
      s.candidateOwners.append((index, connection))
    }
    return s.picker.pick(s.candidates, avoiding: avoiding)
  }

  /// `unavailable` with every address's last failure, when no address can take a call now and
  /// each one's last connect attempt failed (or the resolver found none); nil while an address
  /// is ready, still on its first attempt since it was last ready, or the first answer of the
  /// resolver is awaited.
  private static func unreachableError(_ s: State) -> RPCError? {
    guard s.resolved else { return nil }
    let active = s.entries.filter { !$0.channel.isShutDown }
    if active.isEmpty {
      let why = s.resolutionError.map { ": \($0)" } ?? ""
      return RPCError(code: .unavailable, message: "the client has no endpoints\(why); the call was not sent")
    }
    guard active.allSatisfy(\.channel.unreachable) else { return nil }
    let reasons = active.map { "\($0.channel.endpoint): \($0.channel.lastError ?? "unreachable")" }
    return RPCError(
      code: .unavailable,
      message: "no endpoint could be reached (\(reasons.joined(separator: "; "))); the call was not sent")
  }

  /// Fails the waiting calls that do not wait for ready, once no address can be reached.
  private func failFast() {
    let (failed, error) = state.withLock { s -> ([Waiter], RPCError?) in
      guard let error = Self.unreachableError(s) else { return ([], nil) }
      return (s.waiters.removeAll { !$0.waitForReady }, error)
    }
    guard let error else { return }
    for waiter in failed {
      if let timer = waiter.timer { timerLoop.cancel(timer) }
      waiter.continuation.resume(throwing: error)
    }
  }

  private static func grantWaiters(_ s: inout State) -> [(Waiter, Lease)] {
    // Moved out while granting (picking changes the rest of the state); moving, not copying.
    var waiters = s.waiters
    s.waiters = WaitQueue()
    defer { s.waiters = waiters }
    return waiters.grant { waiter in try? pick(&s, avoiding: waiter.avoiding) }
  }

  private func resume(_ grants: [(Waiter, Lease)]) {
    for (waiter, lease) in grants {
      if let timer = waiter.timer { timerLoop.cancel(timer) }
      waiter.continuation.resume(returning: lease)
    }
  }

  private func grant() {
    resume(state.withLock { Self.grantWaiters(&$0) })
  }

  private func expireWaiter(_ id: UInt64, ownDeadline: Bool) {
    let (waiter, detail) = state.withLock { s in
      let waiter = s.waiters.remove(id)
      let detail = s.entries.map { entry in
        "\(entry.channel.endpoint): \(entry.channel.ready != nil ? "busy" : (entry.channel.lastError ?? "connecting"))"
      }
      return (waiter, detail.joined(separator: ", "))
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

  /// A call found `connection` refusing new streams (its GOAWAY crossed the call): stop handing
  /// it out. The GOAWAY's own notice decides when to reconnect.
  func setAside(_ connection: Connection) {
    state.withLock { s in
      for index in s.entries.indices where s.entries[index].channel.owns(connection) {
        s.entries[index].channel.setAside(connection)
      }
    }
  }

  // MARK: - Resolution

  /// Brings the address set in line with the resolver's answer: new addresses get a connection,
  /// removed ones drain (their running calls finish).
  private func apply(resolved endpoints: [Endpoint]) {
    var toConnect: [UInt64] = []
    var toClose: [Connection] = []
    let changed = state.withLock { s -> Bool in
      s.resolved = true
      s.resolutionError = nil
      guard !s.closed else { return false }
      var changed = false
      for index in s.entries.indices where !s.entries[index].channel.isShutDown {
        guard !endpoints.contains(s.entries[index].channel.endpoint) else { continue }
        changed = true
        for connection in s.entries[index].channel.shutDown() where s.leases[ObjectIdentifier(connection)] == nil {
          toClose.append(connection)
        }
      }
      for endpoint in endpoints
      where !s.entries.contains(where: { !$0.channel.isShutDown && $0.channel.endpoint == endpoint }) {
        changed = true
        let loop = group.loops[s.loopCursor % max(1, group.loops.count)]
        s.loopCursor += 1
        var entry = Entry(
          id: s.nextEntryID, loop: loop, channel: Subchannel(endpoint: endpoint),
          keepaliveInterval: configuration.keepalive?.interval.nanoseconds ?? 0,
          traffic: configuration.collectsMetrics ? TrafficCounters() : nil)
        s.nextEntryID += 1
        if entry.channel.connectIfIdle() == .connect { toConnect.append(entry.id) }
        s.entries.append(entry)
      }
      s.entries.removeAll { $0.channel.isFinished }
      return changed
    }
    if changed {
      logger.log(.debug, "resolved", ("endpoints", endpoints.map(\.description).joined(separator: ",")))
    }
    for connection in toClose { connection.closeGracefully(linger: 200_000_000) }
    for id in toConnect { connect(id) }
    failFast()
  }

  /// Asks the resolver again now, unless an answer is awaited or one came less than a second ago.
  func resolveNow() {
    guard !(resolver is StaticResolver) else { return }
    let now = MonotonicClock.now()
    let go = state.withLock { s in
      guard !s.closed, !s.resolving, !s.resolved || now &- s.lastResolutionStart >= 1_000_000_000 else { return false }
      s.resolving = true
      s.lastResolutionStart = now
      return true
    }
    guard go else { return }
    Task { [self] in
      do {
        let endpoints = try await resolver.resolve()
        state.withLock { $0.resolving = false }
        if endpoints.isEmpty { throw RPCError(code: .unavailable, message: "the resolver returned no address") }
        apply(resolved: endpoints)
      } catch {
        let reason = (error as? RPCError)?.message ?? "\(error)"
        state.withLock { s in
          s.resolving = false
          s.resolved = true
          s.resolutionError = reason
        }
        logger.log(.debug, "resolution failed", ("error", reason))
        failFast()
      }
    }
  }

  private func scheduleResolution() {
    guard !(resolver is StaticResolver) else { return }
    let interval = configuration.resolveInterval.nanoseconds
    guard interval > 0 else { return }
    let timer = timerLoop.schedule(at: MonotonicClock.now() &+ interval) { [self] in
      self.resolveNow()
      self.scheduleResolution()
    }
    let keep = state.withLock { s in
      s.resolveTimer = timer
      return !s.closed
    }
    if !keep { timerLoop.cancel(timer) }
  }

  // MARK: - Connections

  private func connect(_ id: UInt64) {
    guard
      let (endpoint, loop, traffic) = state.withLock({ s -> (Endpoint, EventLoop, TrafficCounters?)? in
        guard let entry = s.entries.first(where: { $0.id == id }) else { return nil }
        return (entry.channel.endpoint, entry.loop, entry.traffic)
      })
    else { return }
    Task {
      do {
        let (fd, peer) = try await Connector.connect(
          host: endpoint.host, port: endpoint.port, loop: loop, timeout: configuration.connectTimeout.nanoseconds)
        let connection = Connection(
          fd: fd, loop: loop, role: .client, peer: peer, settings: configuration.connection,
          limits: TransportLimits(
            maxBufferedBytes: configuration.maxBufferedBytesPerConnection,
            handshakeTimeout: configuration.connectTimeout.nanoseconds), traffic: traffic
        ) { [self] connection, notice in
          // Strong: the cycle ends when the connection closes and leaves the pool. (A weak
          // reference would slow every retain of this per-call object.)
          self.handle(notice, connection: connection, address: id)
        }
        let keep = state.withLock { s in
          !s.closed
            && s.entries.firstIndex(where: { $0.id == id }).map { s.entries[$0].channel.socketConnected(connection) }
              == true
        }
        connection.start()
        if !keep { connection.closeGracefully() }
      } catch {
        connectFailed(id, reason: "\(error)", unreachable: true)
      }
    }
  }

  /// Runs what a subchannel transition asked for.
  private func perform(_ action: Subchannel<Connection>.Action, address id: UInt64) {
    switch action {
    case .none:
      break
    case .connect:
      connect(id)
    case .reconnect(let delay):
      failFast()
      _ = timerLoop.schedule(at: MonotonicClock.now() &+ delay) { [self] in
        let action = self.state.withLock { s -> Subchannel<Connection>.Action in
          guard !s.closed, let index = s.entries.firstIndex(where: { $0.id == id }) else { return .none }
          return s.entries[index].channel.reconnectDue()
        }
        self.perform(action, address: id)
      }
    }
  }

  /// One transition of address `id`, with its counts, in one hold of the lock; `also` runs in
  /// the same hold whether or not the address is still known.
  private func withEntry(
    _ id: UInt64, also: (inout State) -> Void = { _ in },
    _ body: (inout Entry) -> Subchannel<Connection>.Action
  ) -> Subchannel<Connection>.Action {
    state.withLock { s in
      also(&s)
      guard let index = s.entries.firstIndex(where: { $0.id == id }) else { return .none }
      let action = body(&s.entries[index])
      if s.closed, action == .connect { return .none }
      if s.entries[index].channel.isFinished { s.entries.remove(at: index) }
      return action
    }
  }

  private func connectFailed(_ id: UInt64, reason: String, unreachable: Bool) {
    logger.log(.debug, "connect failed", ("error", reason))
    let action = withEntry(id) { entry in
      entry.channel.connectFailed(reason: reason, unreachable: unreachable, backoff: configuration.backoff)
    }
    perform(action, address: id)
    resolveIfNothingWorks()
  }

  /// Every address failing may mean the set is stale (pods replaced): ask the resolver again.
  private func resolveIfNothingWorks() {
    if state.withLock({ s in s.entries.allSatisfy { $0.channel.ready == nil } }) { resolveNow() }
  }

  private func handle(_ notice: Connection.Notice, connection: Connection, address id: UInt64) {
    switch notice {
    case .ready(let settings):
      let (accepted, endpoint) = state.withLock { s -> (Bool, Endpoint?) in
        guard !s.closed, let index = s.entries.firstIndex(where: { $0.id == id }) else { return (false, nil) }
        let accepted = s.entries[index].channel.handshakeCompleted(
          connection, maxStreams: Int(settings.maxConcurrentStreams))
        return (accepted, s.entries[index].channel.endpoint)
      }
      guard accepted, let endpoint else { return connection.closeGracefully() }
      logger.info("connected", ("endpoint", endpoint.description))
      startKeepalive(connection, address: id)
      grant()
      let ready = state.withLock { s in
        let count = s.entries.count { $0.channel.ready != nil }
        let due = s.readyWaiters.filter { Self.readyCountWanted($0.value.minimum, s) <= count }
        for key in due.keys { s.readyWaiters[key] = nil }
        return due.values.map(\.continuation)
      }
      for waiter in ready { waiter.resume() }
    case .goAway(let last, let code, let debug):
      logger.info("goaway", ("peer", connection.peer), ("last_stream", "\(last)"), ("debug", debug))
      let refusal = last == 0 && code == .enhanceYourCalm
      var endpoint: Endpoint?
      let action = withEntry(id) { entry in
        entry.goAways += 1
        endpoint = entry.channel.endpoint
        if code == .enhanceYourCalm && debug == "too many pings" { entry.keepaliveInterval *= 2 }
        return entry.channel.goAway(connection, refusal: refusal, debug: debug, backoff: configuration.backoff)
      }
      if let observer = configuration.observer, let endpoint { observer.observe(.goAwayReceived(endpoint: endpoint)) }
      perform(action, address: id)
      if !refusal { resolveNow() }  // a draining server: its replacement may have a new address
    case .closed(let reason):
      let key = ObjectIdentifier(connection)
      var endpoint: Endpoint?
      let action = withEntry(
        id,
        also: { s in
          _ = s.keepalives.removeValue(forKey: key)
          s.suspects.remove(key)
        }
      ) { entry in
        let action = entry.channel.closed(connection, reason: reason, backoff: configuration.backoff)
        if action == .connect { entry.connectionsLost += 1 }
        endpoint = entry.channel.endpoint
        return action
      }
      if action == .connect, let observer = configuration.observer, let endpoint {
        observer.observe(.connectionLost(endpoint: endpoint))
      }
      if action == .connect { logger.info("disconnected", ("peer", connection.peer), ("reason", reason)) }
      perform(action, address: id)
      if action == .connect { resolveNow() }
      resolveIfNothingWorks()
    case .opened, .pingAck, .idle:
      break
    }
  }

  // MARK: - Keepalive

  private func startKeepalive(_ connection: Connection, address id: UInt64) {
    guard let policy = configuration.keepalive else { return }
    let interval = state.withLock { s in
      s.entries.first(where: { $0.id == id })?.keepaliveInterval ?? policy.interval.nanoseconds
    }
    let keepalive = Keepalive(interval: interval, timeout: policy.timeout.nanoseconds, whenIdle: policy.whenIdle)
    state.withLock { $0.keepalives[ObjectIdentifier(connection)] = keepalive }
    scheduleKeepalive(connection, at: MonotonicClock.now() &+ interval)
  }

  private func scheduleKeepalive(_ connection: Connection, at time: UInt64) {
    _ = connection.loop.schedule(at: time) { [self] in self.keepaliveTick(connection, due: time) }
  }

  /// Runs on the connection's loop (its timers do), which may read its socket's state.
  private func keepaliveTick(_ connection: Connection, due: UInt64) {
    guard !connection.isClosed else { return }
    let now = MonotonicClock.now()
    let (lastInbound, activeCalls) = (connection.lastInboundAt, connection.activeCallCount)
    let key = ObjectIdentifier(connection)
    var action = state.withLock { s -> Keepalive.Action? in
      let action = s.keepalives[key]?.tick(
        now: now, lastInbound: lastInbound, activeCalls: activeCalls, late: now &- due)
      Self.noteSuspect(&s, key)
      return action
    }
    if case .dead = action, connection.hasUnreadInput {
      action = state.withLock { s in
        let action = s.keepalives[key]?.inputWaiting(now: now)
        Self.noteSuspect(&s, key)
        return action
      }
    }
    switch action {
    case nil:
      return
    case .sleep(let until):
      scheduleKeepalive(connection, at: until)
    case .ping(let payload, let checkAt):
      connection.ping(payload)
      scheduleKeepalive(connection, at: checkAt)
    case .dead(let silence):
      let reason = "keepalive: nothing received for \(Connection.describe(nanoseconds: silence)), PING unanswered"
      logger.info("keepalive timeout", ("peer", connection.peer), ("silent", Connection.describe(nanoseconds: silence)))
      connection.forceClose(reason: reason)
    }
  }

  private static func noteSuspect(_ s: inout State, _ key: ObjectIdentifier) {
    if s.keepalives[key]?.awaitingAnswer == true {
      s.suspects.insert(key)
    } else if !s.suspects.isEmpty {
      s.suspects.remove(key)
    }
  }

  // MARK: - Views

  /// Waits until at least `minimum` addresses have a ready connection, or throws
  /// `deadlineExceeded` at `deadline`.
  func waitUntilReady(minimum: Int?, deadline: UInt64) async throws {
    let id = state.withLock { $0.waiters.reserveID() }
    let timer = timerLoop.schedule(at: deadline) { [self] in
      let waiter = self.state.withLock { $0.readyWaiters.removeValue(forKey: id) }
      waiter?.continuation.resume(
        throwing: RPCError(code: .deadlineExceeded, message: "fewer endpoints than asked became ready in time"))
    }
    defer { timerLoop.cancel(timer) }
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
      let outcome: Result<Void, any Error>? = state.withLock { s in
        let count = s.entries.count { $0.channel.ready != nil }
        if count >= Self.readyCountWanted(minimum, s) { return .success(()) }
        // The timer runs on a loop thread and may have come and gone before this parks (it
        // found no waiter): a deadline that has passed is final, or the wait would never end.
        if MonotonicClock.now() >= deadline {
          return .failure(
            RPCError(code: .deadlineExceeded, message: "fewer endpoints than asked became ready in time"))
        }
        s.readyWaiters[id] = (minimum, continuation)
        return nil
      }
      if let outcome { continuation.resume(with: outcome) }
    }
  }

  /// Ready addresses a `waitUntilReady(minimum:)` wants: `minimum`, or (nil) every address of
  /// the resolver's answer, which is unknown until it comes.
  private static func readyCountWanted(_ minimum: Int?, _ s: State) -> Int {
    if let minimum { return minimum }
    return s.resolved ? max(1, s.entries.count { !$0.channel.isShutDown }) : Int.max
  }

  /// Per address in use (not removed by the resolver): its connections and counts.
  var snapshot: [Client.EndpointState] {
    state.withLock { s in
      s.entries.filter { !$0.channel.isShutDown }.map { entry in
        let ready = entry.channel.ready?.connection
        return Client.EndpointState(
          endpoint: entry.channel.endpoint, ready: ready != nil,
          activeCalls: ready.map { s.leases[ObjectIdentifier($0), default: 0] } ?? 0,
          drainingConnections: entry.channel.draining.count, attempts: entry.attempts,
          goAwaysReceived: entry.goAways, connectionsLost: entry.connectionsLost,
          lastError: entry.channel.ready == nil ? entry.channel.lastError : nil)
      }
    }
  }

  /// One address's series on the client's metrics page.
  struct EndpointMetrics: Sendable, Equatable {
    /// `host:port`.
    var endpoint: String
    var attempts = 0
    var goAways = 0
    var connectionsLost = 0
    var openConnections = 0
    var activeCalls = 0
    var sentBytes = 0
    var receivedBytes = 0
  }

  /// Per address the pool holds (a removed one until its last connection closes), by
  /// `host:port`: entries of the same address (removed, then added again) are summed, so each
  /// label set appears once. Sorted by address.
  var endpointMetrics: [EndpointMetrics] {
    let rows = state.withLock { s in
      s.entries.map { entry in
        let channel = entry.channel
        let ready = channel.ready?.connection
        var active = ready.map { s.leases[ObjectIdentifier($0), default: 0] } ?? 0
        for key in channel.draining.keys { active += s.leases[key, default: 0] }
        return (
          entry.channel.endpoint,
          EndpointMetrics(
            endpoint: "", attempts: entry.attempts, goAways: entry.goAways, connectionsLost: entry.connectionsLost,
            openConnections: (ready == nil ? 0 : 1) + channel.draining.count, activeCalls: active,
            sentBytes: entry.traffic?.sent.load(ordering: .relaxed) ?? 0,
            receivedBytes: entry.traffic?.received.load(ordering: .relaxed) ?? 0)
        )
      }
    }
    var merged: [String: EndpointMetrics] = [:]
    for (endpoint, row) in rows {
      let name = endpoint.description
      var total = merged[name] ?? EndpointMetrics(endpoint: name)
      total.attempts += row.attempts
      total.goAways += row.goAways
      total.connectionsLost += row.connectionsLost
      total.openConnections += row.openConnections
      total.activeCalls += row.activeCalls
      total.sentBytes += row.sentBytes
      total.receivedBytes += row.receivedBytes
      merged[name] = total
    }
    return merged.values.sorted { $0.endpoint < $1.endpoint }
  }

  /// Calls parked waiting for a connection (for tests that must act only once a call waits).
  var waitingCalls: Int { state.withLock { $0.waiters.count } }

  /// For diagnostics (a hung test's watchdog): leases held, calls waiting, and every connection.
  var debugState: String {
    state.withLock { s in
      let entries = s.entries.map { entry -> String in
        let channel = entry.channel
        var lines = ["  \(channel.endpoint): \(channel.state), failures \(channel.failures)"]
        if let error = channel.lastError { lines[0] += ", last error: \(error)" }
        for connection in channel.connections {
          lines.append("    (\(s.leases[ObjectIdentifier(connection), default: 0]) leases): \(connection.debugState)")
        }
        return lines.joined(separator: "\n")
      }
      let leases = s.leases.values.reduce(0, +)
      let header =
        "pool: \(s.closed ? "closed" : "open"), \(leases) leases, \(s.waiters.count) waiting calls, "
        + "\(s.readyWaiters.count) ready waiters, close \(s.closeWaiter != nil ? "waiting for leases" : "not waiting")"
        + (s.resolutionError.map { ", resolution error: \($0)" } ?? "")
      return ([header] + entries).joined(separator: "\n")
    }
  }

  /// No new calls; waits for running ones, then closes every connection.
  func close() async {
    let (waiters, timer) = state.withLock { s in
      s.closed = true
      defer { s.resolveTimer = nil }
      return (s.waiters.removeAll { _ in true }, s.resolveTimer)
    }
    if let timer { timerLoop.cancel(timer) }
    for waiter in waiters {
      if let timer = waiter.timer { timerLoop.cancel(timer) }
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
      s.entries.indices.flatMap { s.entries[$0].channel.shutDown() }
    }
    for connection in connections { connection.closeGracefully(linger: 200_000_000) }
    // Returns once every socket is closed, so that what the client owes (a RESET, a GOAWAY
    // after a protocol violation) is on the wire before, say, the process exits (PROTOCOL.md 13.4).
    for connection in connections { await connection.waitUntilClosed() }
  }
}
