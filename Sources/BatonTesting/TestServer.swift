import BatonPosix
public import BatonServer

/// A server a test runs for the duration of a closure (see ``withTestServer(router:configuration:faults:_:)``).
public final class TestServer: Sendable {
  /// The running server.
  public let server: Server
  /// The proxy in front of it, when the test gave a fault plan.
  public let proxy: FaultProxy?
  private let running: Task<Void, any Error>

  /// Where clients connect: the proxy's address when there is one, the server's otherwise.
  public let endpoint: Endpoint

  fileprivate init(server: Server, proxy: FaultProxy?, endpoint: Endpoint, running: Task<Void, any Error>) {
    self.server = server
    self.proxy = proxy
    self.endpoint = endpoint
    self.running = running
  }

  /// A graceful stop (GOAWAY, drain within `deadline`), returning once the server has stopped.
  @discardableResult
  public func stopGracefully(deadline: Duration? = nil) async -> StopReport {
    let report = await server.gracefulStop(deadline: deadline)
    _ = try? await running.value
    return report
  }

  /// A hard stop: open streams end with `unavailable`. Returns once the server has stopped.
  public func stopNow() async {
    server.stopNow()
    _ = try? await running.value
  }
}

/// Runs a server on 127.0.0.1 (a free port) for the duration of `body`, then stops it at once.
///
/// With a fault plan, a ``FaultProxy`` stands in front of the server and ``TestServer/endpoint``
/// is the proxy's: every client connection goes through the plan.
///
/// ```swift
/// try await withTestServer(router: router, faults: try FaultPlan(parsing: "stall 2s after-opens=1")) { test in
///   try await withClient(endpoints: [test.endpoint]) { client in ... }
/// }
/// ```
/// - Throws: the bind error before `body` runs, else `body`'s error once the server has stopped.
public func withTestServer<Value: Sendable>(
  router: Router, configuration: Server.Configuration = .init(logger: .disabled), faults: FaultPlan? = nil,
  _ body: (TestServer) async throws -> Value
) async throws -> Value {
  let server = Server(configuration: configuration, router: router)
  let running = Task { try await server.run() }
  let address: Endpoint
  do {
    address = try await server.listeningAddress
  } catch {
    _ = try? await running.value
    throw error
  }
  let proxy: FaultProxy?
  do {
    proxy = try faults.map { plan in try FaultProxy(upstream: address, plan: plan, logger: configuration.logger) }
  } catch {
    server.stopNow()
    _ = try? await running.value
    throw error
  }
  let test = TestServer(server: server, proxy: proxy, endpoint: proxy?.endpoint ?? address, running: running)
  let outcome: Result<Value, any Error>
  do {
    outcome = .success(try await body(test))
  } catch {
    outcome = .failure(error)
  }
  await test.stopNow()
  proxy?.close()
  return try outcome.get()
}

/// Several servers for one test, each behind its own proxy (see ``withTestCluster(count:router:configuration:faults:_:)``).
public final class TestCluster: Sendable {
  /// The members, in order.
  public let members: [TestMember]

  init(members: [TestMember]) { self.members = members }

  /// Every member's endpoint, in order: what a client is given.
  public var endpoints: [Endpoint] { members.map(\.endpoint) }

  /// The `index`-th member.
  public subscript(index: Int) -> TestMember { members[index] }
}

/// One server of a ``TestCluster``, always behind a ``FaultProxy`` so that its address outlives
/// the server: it can be stopped, killed, frozen and restarted while clients keep its endpoint.
public final class TestMember: Sendable {
  /// Its number in the cluster, from 0.
  public let index: Int
  /// The proxy clients connect through (its plan, if any, is the member's fault plan).
  public let proxy: FaultProxy
  private let makeRouter: @Sendable (Int) -> Router
  private let configuration: Server.Configuration
  private let state: Locked<(server: Server, running: Task<Void, any Error>?)>

  fileprivate init(
    index: Int, makeRouter: @escaping @Sendable (Int) -> Router, configuration: Server.Configuration, plan: FaultPlan
  ) async throws {
    self.index = index
    self.makeRouter = makeRouter
    self.configuration = configuration
    let (server, running, address) = try await Self.start(router: makeRouter(index), configuration: configuration)
    do {
      proxy = try FaultProxy(upstream: address, plan: plan, logger: configuration.logger)
    } catch {
      server.stopNow()
      _ = try? await running.value
      throw error
    }
    state = Locked((server, running))
  }

  /// Where clients connect; the same across restarts.
  public var endpoint: Endpoint { proxy.endpoint }

  /// The server now serving (a new one after each ``restart()``).
  public var server: Server { state.withLock { $0.server } }

  /// Whether a server is running (not stopped, killed, or not yet restarted).
  public var isRunning: Bool { state.withLock { $0.running != nil } }

  /// A graceful stop, as on a deploy: new connections are refused at once, the server sends
  /// its GOAWAYs and drains within `deadline`. Returns once it has stopped.
  @discardableResult
  public func stopGracefully(deadline: Duration? = nil) async -> StopReport {
    beginGracefulStop(deadline: deadline)
    let report = await server.stopReport()
    await waitForStop()
    return report
  }

  /// Starts a graceful stop and returns at once (readiness is off and new connections are
  /// refused by then), for a test that acts while the member drains; ``stopGracefully(deadline:)``
  /// then waits for the end and its report.
  public func beginGracefulStop(deadline: Duration? = nil) {
    proxy.refusesConnections = true
    server.beginGracefulStop(deadline: deadline)
  }

  /// A hard stop: open streams end with `unavailable`, connections close after their frames.
  public func stopNow() async {
    proxy.refusesConnections = true
    server.stopNow()
    await waitForStop()
  }

  /// As if the process died: every connection is closed with no GOAWAY (whatever the streams on
  /// it were doing, they may have been processed), then the server behind is stopped unseen.
  public func kill() async {
    proxy.refusesConnections = true
    proxy.cutConnections()
    server.stopNow()
    await waitForStop()
  }

  /// As if the process were suspended: its connections stay open but nothing is read or
  /// forwarded either way, and new connections are not served, until ``thaw()``.
  public func freeze() { proxy.freeze() }

  /// Resumes a frozen member.
  public func thaw() { proxy.thaw() }

  /// Starts a new server (same router and configuration) behind the same endpoint, once the
  /// previous one has stopped (it is stopped at once first if it still runs).
  public func restart() async throws {
    if isRunning { await stopNow() }
    let (server, running, address) = try await Self.start(router: makeRouter(index), configuration: configuration)
    state.withLock { $0 = (server, running) }
    proxy.upstream = address
    proxy.refusesConnections = false
  }

  private func waitForStop() async {
    let running = state.withLock { state -> Task<Void, any Error>? in
      defer { state.running = nil }
      return state.running
    }
    _ = try? await running?.value
  }

  fileprivate func close() async {
    proxy.refusesConnections = true
    server.stopNow()
    await waitForStop()
    proxy.close()
  }

  private static func start(
    router: Router, configuration: Server.Configuration
  ) async throws -> (Server, Task<Void, any Error>, Endpoint) {
    var configuration = configuration
    configuration.port = 0  // the member's port is the proxy's; the server's own may change
    let server = Server(configuration: configuration, router: router)
    let running = Task { try await server.run() }
    do {
      return (server, running, try await server.listeningAddress)
    } catch {
      _ = try? await running.value
      throw error
    }
  }
}

/// Runs `count` servers with the same router, each behind a ``FaultProxy`` (with the plan
/// `faults[index]`, if given), for the duration of `body`; then stops them all at once.
///
/// Members can be stopped gracefully, stopped at once, killed, frozen and thawed, and restarted
/// on the same endpoint (``TestMember``): the scenarios of a deploy, a scale-down or a crash.
/// - Throws: a bind error before `body` runs, else `body`'s error once everything has stopped.
public func withTestCluster<Value: Sendable>(
  count: Int, router: Router, configuration: Server.Configuration = .init(logger: .disabled),
  faults: [Int: FaultPlan] = [:], _ body: (TestCluster) async throws -> Value
) async throws -> Value {
  try await withTestCluster(count: count, configuration: configuration, faults: faults, router: { _ in router }, body)
}

/// ``withTestCluster(count:router:configuration:faults:_:)`` with a router per member, made by
/// `router(index)` (again at each restart): so that a handler can tell a ``CallLedger`` which
/// member processed a call.
public func withTestCluster<Value: Sendable>(
  count: Int, configuration: Server.Configuration = .init(logger: .disabled), faults: [Int: FaultPlan] = [:],
  router: @escaping @Sendable (Int) -> Router, _ body: (TestCluster) async throws -> Value
) async throws -> Value {
  var members: [TestMember] = []
  do {
    for index in 0..<count {
      members.append(
        try await TestMember(
          index: index, makeRouter: router, configuration: configuration, plan: faults[index] ?? .none))
    }
  } catch {
    for member in members { await member.close() }
    throw error
  }
  let cluster = TestCluster(members: members)
  let outcome: Result<Value, any Error>
  do {
    outcome = .success(try await body(cluster))
  } catch {
    outcome = .failure(error)
  }
  for member in members { await member.close() }
  return try outcome.get()
}
