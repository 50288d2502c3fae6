import BatonCore
package import BatonPosix
import Foundation
import Synchronization

/// A Baton server: a listening socket, the connections it accepts, and the handlers of a ``Router``.
///
/// ```swift
/// var router = Router()
/// router.unary("echo.Echo/Unary") { request, _ in request }
/// let server = Server(router: router)
/// try await server.run()          // returns once the server has fully stopped
/// ```
/// Stop it with ``gracefulStop(deadline:)`` (or ``beginGracefulStop(deadline:)``), by cancelling
/// the task that runs ``run()`` (a hard stop), or with SIGTERM when ``Configuration/handleSignals``
/// is set.
public final class Server: Sendable {
  /// What the server was created with.
  public let configuration: Configuration
  let group: EventLoopGroup
  let dispatcher: CallDispatcher
  var drainSignal: DrainSignal { dispatcher.drainSignal }
  let state: Locked<State>
  private let nextConnectionID = Atomic<UInt64>(0)

  struct State {
    var lifecycle = ServerLifecycle()
    var listener: Listener?
    var health: HealthEndpoint?
    var address: Endpoint?
    var listenError: RPCError?
    var addressWaiters: [CheckedContinuation<Endpoint, any Error>] = []
    var connections: [UInt64: Entry] = [:]
    var connectionsWaiter: CheckedContinuation<Bool, Never>?
    /// A stop asked for before ``run()`` was ready to take it.
    var stopRequest: StopRequest?
    /// ``run()``, parked until a stop is asked for.
    var stopRequestWaiter: CheckedContinuation<StopRequest, Never>?
    var stopWaiters: [CheckedContinuation<StopReport, Never>] = []
    var report: StopReport?
    var services: [Service] = []
    var workers: [Int: Task<Void, Never>] = [:]
    var signals: SignalTrap?
  }

  struct Entry {
    let id: UInt64
    /// The one registry of the connection's open calls (``Connection/openCalls``).
    let connection: Connection
    /// Every decision about the connection's drain, age, idleness and keepalive.
    var manager: ConnectionManager
    /// The connection's hygiene and drain timers, one per purpose, cancelled when it closes: a
    /// closed connection leaves nothing on its loop's timer queue (a 2-hour keepalive timer per
    /// closed connection was memory that churn never got back).
    var timers: [ConnectionManager.Timer: TimerHandle] = [:]
  }

  /// Arms connection `id`'s timer `purpose` on its loop, replacing the one it had.
  private func schedule(_ id: UInt64, _ purpose: ConnectionManager.Timer, on loop: EventLoop, at deadline: UInt64) {
    let timer = loop.schedule(at: deadline) { [weak self] in
      self?.timerFired(id, purpose)
    }
    let replaced = state.withLock { s -> TimerHandle?? in
      guard s.connections[id] != nil else { return .some(timer) }  // closed meanwhile
      return .some(s.connections[id]?.timers.updateValue(timer, forKey: purpose))
    }
    if case let old?? = replaced { loop.cancel(old) }
  }

  /// A hook or a background worker, stopped in reverse order of registration.
  struct Service {
    var name: String
    var timeout: Duration
    var kind: Kind
    enum Kind {
      case hook(@Sendable () async throws -> Void)
      case worker(@Sendable () async throws -> Void)
    }
  }

  /// Creates a server; nothing is bound until ``run()``.
  public convenience init(configuration: Configuration = .defaults, router: Router) {
    self.init(configuration: configuration, router: router, group: .shared)
  }

  package init(configuration: Configuration, router: Router, group: EventLoopGroup) {
    self.configuration = configuration
    self.group = group
    self.dispatcher = CallDispatcher(
      router: router, exposeErrorDetails: configuration.exposeErrorDetails, logger: configuration.logger,
      collectsMetrics: configuration.collectsMetrics, observer: configuration.observer)
    self.state = Locked(State())
  }

  var logger: Logger { configuration.logger }

  // MARK: - Running

  /// Binds, serves, and returns only once the server has fully stopped (connections closed,
  /// hooks run). Cancelling the calling task is a hard stop.
  /// - Throws: ``RPCError`` with `unavailable` if the address cannot be bound,
  ///   `failedPrecondition` if this server already ran.
  public func run() async throws {
    let started = state.withLock { $0.lifecycle.start() }
    guard started else {
      if state.withLock({ $0.lifecycle.state == .stopped && $0.address == nil }) { return }
      throw RPCError(code: .failedPrecondition, message: "a server runs once; create a new one")
    }
    // Signals are ours from the first instant: a SIGTERM while binding is a graceful stop (the
    // listener, once bound, is closed at once), not the default action that kills the process.
    if configuration.handleSignals {
      let trap = SignalTrap(
        first: { [weak self] in self?.beginGracefulStop() }, second: { [weak self] in self?.stopNow() })
      state.withLock { $0.signals = trap }
    }
    if let problem = configuration.connection.invalidReason {
      throw failedToListen(RPCError(code: .invalidArgument, message: "invalid connection settings: \(problem)"))
    }
    let listener: Listener
    do {
      let addresses = try SocketAddress.resolve(host: configuration.host, port: configuration.port)
      guard let first = addresses.first else {
        throw RPCError(code: .unavailable, message: "\(configuration.host) resolves to no address")
      }
      listener = try Listener(address: first, backlog: configuration.backlog, loop: group.next()) {
        [weak self] fd, peer in
        guard let self else { return Socket.close(fd) }
        self.accept(fd: fd, peer: peer)
      }
    } catch {
      throw failedToListen(
        RPCError(
          code: .unavailable, message: "could not listen on \(configuration.host):\(configuration.port): \(error)",
          cause: error))
    }
    var health: HealthEndpoint?
    if let healthPort = configuration.healthPort {
      do {
        health = try HealthEndpoint(host: configuration.host, port: healthPort, loop: group.next()) {
          [weak self] path in
          self?.healthAnswer(path) ?? (503, "text/plain", "stopped\n")
        }
      } catch {
        listener.close()
        throw failedToListen(
          RPCError(
            code: .unavailable, message: "could not listen for health probes on port \(healthPort): \(error)",
            cause: error))
      }
    }
    let endpoint = Endpoint(host: listener.address.host, port: listener.address.port)
    let (waiters, services, stopping) = state.withLock { s in
      s.listener = listener
      s.health = health
      s.address = endpoint
      defer { s.addressWaiters.removeAll() }
      return (s.addressWaiters, s.services, s.lifecycle.state != .running)
    }
    // Workers are up before anyone can learn the address (and so stop the server): a stop
    // must find every worker it has to stop.
    startWorkers(services)
    if stopping {
      // A stop (a signal) arrived while binding: the listener never accepts.
      listener.close()
    } else {
      listener.start()
      logger.info("listening", ("address", endpoint.description))
    }
    if let health {
      health.start()
      logger.info("health listening", ("address", health.address.description))
    }
    for waiter in waiters { waiter.resume(returning: endpoint) }
    // Serve until a stop is asked for, then run the stop sequence here, in run()'s own task:
    // run() returns when it is done. Cancelling this task is a hard stop, during the wait or
    // during a graceful stop's drain alike.
    await withTaskCancellationHandler {
      let request = await withCheckedContinuation { (continuation: CheckedContinuation<StopRequest, Never>) in
        let early = state.withLock { s -> StopRequest? in
          if let request = s.stopRequest { return request }
          s.stopRequestWaiter = continuation
          return nil
        }
        if let early { continuation.resume(returning: early) }
      }
      await stopSequence(deadline: request.deadline, hard: request.hard)
    } onCancel: {
      self.stopNow()
    }
  }

  /// A stop for ``run()`` to carry out: a graceful one with its deadline, or a hard one.
  struct StopRequest: Sendable {
    var deadline: Duration
    var hard: Bool
  }

  /// Hands a stop to ``run()``, now if it waits, or for when it does. The lifecycle lets at most
  /// one through (a second stop during a drain only cuts it short: ``stopNow()``).
  func requestStop(_ request: StopRequest) {
    let waiter = state.withLock { s -> CheckedContinuation<StopRequest, Never>? in
      if let waiter = s.stopRequestWaiter {
        s.stopRequestWaiter = nil
        return waiter
      }
      if s.stopRequest == nil { s.stopRequest = request }
      return nil
    }
    waiter?.resume(returning: request)
  }

  /// Binding failed: the server is stopped before it ran, and whoever waits for its address
  /// learns why. Returns the error for `run()` to throw.
  private func failedToListen(_ failure: RPCError) -> RPCError {
    let waiters = state.withLock { s in
      s.listenError = failure
      _ = s.lifecycle.hardStop()
      _ = s.lifecycle.connectionsClosed()
      _ = s.lifecycle.hooksFinished()
      defer { s.addressWaiters.removeAll() }
      return s.addressWaiters
    }
    for waiter in waiters { waiter.resume(throwing: failure) }
    return failure
  }

  /// The address the server is bound to, once ``run()`` has bound it (waits until then).
  /// - Throws: the bind error if binding failed.
  public var listeningAddress: Endpoint {
    get async throws {
      try await withCheckedThrowingContinuation { continuation in
        let result: Result<Endpoint, RPCError>? = state.withLock { s in
          if let address = s.address { return .success(address) }
          if let error = s.listenError { return .failure(error) }
          if s.lifecycle.state == .stopped {
            return .failure(RPCError(code: .unavailable, message: "the server stopped before it listened"))
          }
          s.addressWaiters.append(continuation)
          return nil
        }
        if let result { continuation.resume(with: result) }
      }
    }
  }

  /// Where the health endpoint listens, if ``Configuration/healthPort`` is set (nil otherwise,
  /// or before ``run()`` has bound it).
  public var healthAddress: Endpoint? { state.withLock { $0.health?.address } }

  /// Connections accepted since the server started (including refused ones).
  public var connectionsAccepted: Int { Int(nextConnectionID.load(ordering: .relaxed)) }

  /// Whether a readiness probe should pass: true while running, false from the first instant of
  /// a stop.
  public var isReady: Bool { state.withLock { $0.lifecycle.isReady } }

  /// Where a server is in its life (``gracefulStop(deadline:)`` walks them in order).
  public enum Phase: String, Sendable, Hashable, CustomStringConvertible {
    case idle, running, draining, cancelling, closing, stopped
    /// The phase's name, as in logs and `/drainz`.
    public var description: String { rawValue }
  }

  /// The lifecycle phase now.
  public var phase: Phase {
    state.withLock { s in
      switch s.lifecycle.state {
      case .idle: .idle
      case .running: .running
      case .draining: .draining
      case .cancelling: .cancelling
      case .closing: .closing
      case .stopped: .stopped
      }
    }
  }

  // MARK: - Hooks and workers

  /// Registers cleanup to run after every connection has closed, in reverse order of
  /// registration, each bounded by `timeout` (a hook that overruns is logged and left behind).
  public func addShutdownHook(
    _ name: String, timeout: Duration = .seconds(10), _ body: @escaping @Sendable () async throws -> Void
  ) {
    state.withLock { $0.services.append(Service(name: name, timeout: timeout, kind: .hook(body))) }
  }

  /// Registers a background worker: started when ``run()`` starts, cancelled (Swift task
  /// cancellation) and awaited for at most `timeout` during the stop, in reverse order of
  /// registration together with the hooks. Register before ``run()``.
  public func addBackgroundWorker(
    _ name: String, timeout: Duration = .seconds(10), _ body: @escaping @Sendable () async throws -> Void
  ) {
    state.withLock { $0.services.append(Service(name: name, timeout: timeout, kind: .worker(body))) }
  }

  private func startWorkers(_ services: [Service]) {
    for (index, service) in services.enumerated() {
      guard case .worker(let body) = service.kind else { continue }
      let task = Task { _ = try? await body() }
      state.withLock { $0.workers[index] = task }
    }
  }

  // MARK: - Connections

  private func accept(fd: Int32, peer: String) {
    guard state.withLock({ $0.lifecycle.acceptDecision }) != .reject else { return Socket.close(fd) }
    let id = nextConnectionID.add(1, ordering: .relaxed).newValue
    let connection = Connection(
      fd: fd, loop: group.next(), role: .server, peer: peer, settings: configuration.connection,
      limits: TransportLimits(
        maxBufferedBytes: configuration.maxBufferedBytesPerConnection,
        maxPingsPerSecond: configuration.connectionManagement.maxPingsPerSecond,
        handshakeTimeout: configuration.handshakeTimeout.nanoseconds,
        frameTimeout: configuration.frameTimeout.nanoseconds),
      traffic: dispatcher.metrics?.traffic
    ) { [weak self, dispatcher] connection, notice in
      // New calls go straight to the dispatcher; only lifecycle notices need the server.
      if case .opened(let stream, let head, _) = notice {
        dispatcher.serve(stream, head)
      } else {
        self?.handle(notice, on: connection, id: id)
      }
    }
    // Admission is decided and recorded in one step, and before the connection reads a byte:
    // - a connection over the limit is aborted before it starts, so it cannot open (and have
    //   served) a call in the moment between starting and being refused;
    // - an admitted one is in `connections` before it can close, so its `.closed` notice cannot
    //   come first and leave an entry behind that nothing removes;
    // - a stop that begins meanwhile either sees the entry (and closes it) or is seen here.
    let now = MonotonicClock.now()
    let admission = state.withLock { s -> Admission in
      let decision = s.lifecycle.acceptDecision
      if decision == .reject { return .reject }
      if s.connections.count >= configuration.maxConnections { return .refuse }
      s.connections[id] = Entry(
        id: id, connection: connection,
        manager: ConnectionManager(policy: managementPolicy(), acceptedAt: now))
      return .serve(draining: decision == .serveDraining)
    }
    switch admission {
    case .reject:
      Socket.close(fd)  // never started: the socket is still ours alone
      return
    case .refuse, .serve:
      dispatcher.metrics?.connectionsAccepted.add()
      configuration.observer?.observe(.connectionOpened(peer: peer))
    }
    switch admission {
    case .reject:
      break
    case .refuse:
      logger.warning(
        "connection refused", ("peer", peer), ("reason", "connection limit \(configuration.maxConnections) reached"))
      connection.abort(
        .enhanceYourCalm, reason: "connection limit (\(configuration.maxConnections)) reached; nothing was processed")
      connection.start()  // sends SETTINGS and the GOAWAY, processes nothing it reads, closes
      noteGoAwaySent(peer)
    case .serve(let draining):
      connection.start()
      manage(id) { manager, _ in manager.start(draining: draining) }
    }
  }

  private enum Admission {
    /// The server is stopping: close the socket, say nothing.
    case reject
    /// Over ``Configuration/maxConnections``: GOAWAY(ENHANCE_YOUR_CALM), then close.
    case refuse
    /// Recorded in `connections`; `draining` if a drain began (GOAWAY at once).
    case serve(draining: Bool)
  }

  // MARK: - Connection management

  /// What the configuration asks of one connection; its max age jittered.
  private func managementPolicy() -> ConnectionManager.Policy {
    let management = configuration.connectionManagement
    var maxAge: UInt64?
    if let age = management.maxAge {
      let jitter = 1 + Double.random(in: -1...1) * max(0, min(1, management.maxAgeJitter))
      maxAge = UInt64(Double(age.nanoseconds) * jitter)
    }
    return ConnectionManager.Policy(
      maxAge: maxAge, maxAgeGrace: management.maxAgeGrace.nanoseconds,
      idleTimeout: management.idleTimeout?.nanoseconds, keepaliveInterval: management.keepaliveInterval?.nanoseconds,
      keepaliveTimeout: management.keepaliveTimeout.nanoseconds,
      barrierCap: configuration.shutdown.goAwayBarrierCap.nanoseconds)
  }

  /// Runs one step of connection `id`'s manager under the lock, then performs the actions it
  /// returned with no lock held: the one place where "decide under the lock, act after" is
  /// written for connection management. Nothing happens for a connection already closed.
  func manage(_ id: UInt64, _ step: (inout ConnectionManager, Connection) -> [ConnectionManager.Action]) {
    let decided = state.withLock { s -> (Entry, [ConnectionManager.Action])? in
      guard var entry = s.connections[id] else { return nil }
      let actions = step(&entry.manager, entry.connection)
      s.connections[id] = entry
      return (entry, actions)
    }
    guard let (entry, actions) = decided else { return }
    for action in actions { perform(action, entry) }
  }

  private func perform(_ action: ConnectionManager.Action, _ entry: Entry) {
    let connection = entry.connection
    let id = entry.id
    switch action {
    case .ping(let payload):
      connection.ping(payload)
    case .goAway:
      connection.notifyWhenIdle()
      connection.goAway(lastStreamID: StreamID.max, debug: "server stopping")
      noteGoAwaySent(entry.connection.peer)
    case .finalGoAway:
      let last = connection.finalGoAway(debug: "server stopping")
      noteGoAwaySent(entry.connection.peer)
      manage(id) { manager, connection in
        manager.finalGoAwaySent(lastStreamID: last, activeCalls: connection.activeCallCount)
      }
    case .close:
      connection.closeGracefully()
    case .abort(let reason):
      connection.abort(.noError, reason: reason)
      noteGoAwaySent(entry.connection.peer)
    case .cut(let reason):
      _ = cut(entry, reason: reason)
    case .arm(let timer, let deadline):
      schedule(id, timer, on: connection.loop, at: deadline)
    case .log(let event):
      logger.info(event, ("peer", entry.connection.peer))
    }
  }

  private func timerFired(_ id: UInt64, _ timer: ConnectionManager.Timer) {
    guard let connection = state.withLock({ $0.connections[id]?.connection }) else { return }
    // Observed before the step, outside the server's lock.
    let seen = ConnectionManager.Observation(
      now: MonotonicClock.now(), lastInboundAt: connection.lastInboundAt, activeCalls: connection.activeCallCount,
      lastCallEndedAt: connection.lastCallEndedAt)
    manage(id) { manager, _ in manager.timerFired(timer, seen) }
  }

  /// Begins connection `id`'s drain (two GOAWAYs around a PING); nothing if it already began.
  func beginDrain(_ id: UInt64) {
    let now = MonotonicClock.now()
    manage(id) { manager, _ in manager.beginDrain(now: now) }
  }

  private func handle(_ notice: Connection.Notice, on connection: Connection, id: UInt64) {
    switch notice {
    case .opened(let stream, let head, _):
      dispatcher.serve(stream, head)
    case .pingAck(let payload):
      let now = MonotonicClock.now()
      manage(id) { manager, _ in manager.pingAck(payload, now: now) }
    case .idle:
      manage(id) { manager, connection in manager.idle(activeCalls: connection.activeCallCount) }
    case .closed:
      let (waiter, timers, drainStartedAt) = state.withLock {
        s -> (CheckedContinuation<Bool, Never>?, [TimerHandle], UInt64?) in
        let removed = s.connections.removeValue(forKey: id)
        let timers = removed.map { Array($0.timers.values) } ?? []
        guard s.connections.isEmpty else { return (nil, timers, removed?.manager.drainStartedAt) }
        defer { s.connectionsWaiter = nil }
        return (s.connectionsWaiter, timers, removed?.manager.drainStartedAt)
      }
      for timer in timers { connection.loop.cancel(timer) }
      if let drainStartedAt {
        let took = MonotonicClock.now() &- drainStartedAt
        dispatcher.metrics?.connectionDrains.observe(nanoseconds: took)
        configuration.observer?.observe(.connectionDrained(peer: connection.peer, duration: .nanoseconds(took)))
      }
      configuration.observer?.observe(.connectionClosed(peer: connection.peer))
      waiter?.resume(returning: true)
    case .goAway:
      dispatcher.metrics?.goAwaysReceived.add()
      configuration.observer?.observe(.goAwayReceived(peer: connection.peer))
    case .ready:
      break
    }
  }

  /// For diagnostics (a hung test's watchdog): the lifecycle, whether a stop waits for the
  /// connections, and per connection its drain phase, its calls and its stream slots.
  package var debugState: String {
    let (header, entries) = state.withLock { s in
      (
        "server: \(s.lifecycle.state), \(s.connections.count) connections, "
          + "stop \(s.connectionsWaiter != nil ? "waiting for connections" : "not waiting"), run \(s.stopRequestWaiter != nil ? "serving" : "stopping or not started")",
        s.connections.values.sorted { $0.id < $1.id }
      )
    }
    let lines = entries.map { entry in
      let calls = entry.connection.openCalls.map { "\($0.id) \($0.method)" }
      return
        "  #\(entry.id) drain \(entry.manager.phase), calls [\(calls.joined(separator: ", "))]: \(entry.connection.debugState)"
    }
    return ([header] + lines).joined(separator: "\n")
  }

  /// Ends every call still open on one connection with `unavailable` and `reason`, then closes it
  /// (final GOAWAY first, FIN after the last frame).
  func cut(_ entry: Entry, reason: String) -> [StopReport.CutStream] {
    let now = MonotonicClock.now()
    entry.connection.finalGoAway(debug: "server stopping")
    noteGoAwaySent(entry.connection.peer)
    let cut = entry.connection.cutAll(Trailers(RPCError(code: .unavailable, message: reason)))
    entry.connection.closeGracefully(linger: configuration.shutdown.flushGrace.nanoseconds)
    if !cut.isEmpty {
      dispatcher.metrics?.streamsCutByStop.add(cut.count)
      configuration.observer?.observe(.streamsCut(count: cut.count, reason: "stop"))
    }
    return cut.map { call in
      StopReport.CutStream(
        method: call.method, age: .nanoseconds(now &- min(call.openedAt, now)), peer: entry.connection.peer)
    }
  }

  func noteGoAwaySent(_ peer: String) {
    dispatcher.metrics?.goAwaysSent.add()
    configuration.observer?.observe(.goAwaySent(peer: peer))
  }

}
