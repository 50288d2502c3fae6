import BatonClient
import BatonPosix
import BatonServer
import Testing

// README's swift-metrics adapter, ServiceLifecycle service and swift-log bridge need packages
// Baton cannot depend on. Each is here with a small stand-in for the other package's types
// (same names and shapes as far as the snippet uses them), so that the Baton half of each
// snippet is compiled and run as README shows it. Keep them in step with README.

// MARK: - Stand-ins for swift-metrics (Metrics), swift-service-lifecycle and swift-log

/// Records what the stand-in metrics receive.
private let recorded = Locked<[String]>([])

/// swift-metrics, as far as the adapter uses it (`Metrics.Counter`, `Metrics.Timer`).
enum Metrics {
  /// swift-metrics' `Counter(label:dimensions:)`.
  struct Counter {
    let label: String
    let dimensions: [(String, String)]
    init(label: String, dimensions: [(String, String)] = []) {
      self.label = label
      self.dimensions = dimensions
    }
    func increment(by amount: Int = 1) {
      recorded.withLock { $0.append("\(label)\(dimensions.map { "\($0.0)=\($0.1)" })") }
    }
  }

  /// swift-metrics' `Timer(label:dimensions:)` with `record(_: Duration)`.
  struct Timer {
    let label: String
    let dimensions: [(String, String)]
    init(label: String, dimensions: [(String, String)] = []) {
      self.label = label
      self.dimensions = dimensions
    }
    func record(_ duration: Duration) { recorded.withLock { $0.append("\(label) timed") } }
  }
}

// MARK: README: a swift-metrics adapter

struct SwiftMetricsObserver: ServerObserver {
  func observe(_ event: ServerEvent) {
    switch event {
    case .callStarted(let method):
      Metrics.Counter(label: "baton_calls_started", dimensions: [("method", method)]).increment()
    case .callFinished(let method, let status, let duration):
      let code = status?.description ?? "ok"
      Metrics.Counter(label: "baton_calls_handled", dimensions: [("method", method), ("code", code)]).increment()
      Metrics.Timer(label: "baton_handling", dimensions: [("method", method)]).record(duration)
    case .goAwaySent: Metrics.Counter(label: "baton_goaways_sent").increment()
    case .connectionDrained(_, let duration): Metrics.Timer(label: "baton_connection_drain").record(duration)
    case .streamsCut(let count, let reason):
      Metrics.Counter(label: "baton_streams_cut", dimensions: [("reason", reason)]).increment(by: count)
    case .connectionOpened, .connectionClosed, .goAwayReceived: break
    }
  }
}

// MARK: Stand-ins for swift-service-lifecycle

/// ServiceLifecycle's `Service`.
private protocol Service: Sendable {
  func run() async throws
}

/// What ServiceLifecycle's `ServiceGroup` does on SIGTERM: calls every graceful-shutdown handler.
private final class GracefulShutdownStandIn: Sendable {
  @TaskLocal static var current: GracefulShutdownStandIn?
  /// The handlers, or nil once triggered.
  private let handlers = Locked<[@Sendable () -> Void]?>([])
  func add(_ handler: @escaping @Sendable () -> Void) {
    let late = handlers.withLock { handlers -> Bool in
      guard handlers != nil else { return true }
      handlers?.append(handler)
      return false
    }
    if late { handler() }
  }
  func trigger() {
    let all = handlers.withLock { handlers in
      defer { handlers = nil }
      return handlers ?? []
    }
    for handler in all { handler() }
  }
}

/// ServiceLifecycle's `withGracefulShutdownHandler(operation:onGracefulShutdown:)`.
private func withGracefulShutdownHandler<T>(
  operation: () async throws -> T, onGracefulShutdown: @escaping @Sendable () -> Void
) async rethrows -> T {
  GracefulShutdownStandIn.current?.add(onGracefulShutdown)
  return try await operation()
}

// MARK: README: Baton under ServiceLifecycle

private struct BatonService: Service {
  let server: Server
  func run() async throws {
    // Graceful shutdown (SIGTERM to the ServiceGroup) drains; cancellation stops at once.
    try await withGracefulShutdownHandler {
      try await server.run()
    } onGracefulShutdown: {
      server.beginGracefulStop()
    }
  }
}

// MARK: Stand-in for swift-log

/// swift-log's `Logger`, as far as the bridge uses it.
private struct SwiftLogLogger: Sendable {
  enum Level: Sendable { case trace, debug, info, notice, warning, error, critical }
  enum MetadataValue: Sendable, Equatable { case string(String) }
  typealias Metadata = [String: MetadataValue]
  var logLevel: Level = .info
  let lines = Locked<[(Level, String, Metadata)]>([])
  func log(level: Level, _ message: String, metadata: Metadata? = nil) {
    lines.withLock { $0.append((level, message, metadata ?? [:])) }
  }
}

// MARK: README: a swift-log bridge

extension BatonServer.Logger {
  /// Baton's lifecycle lines through swift-log: the level maps across, the event is the message,
  /// and each field becomes a metadata value.
  fileprivate static func swiftLog(_ logger: SwiftLogLogger) -> BatonServer.Logger {
    let minimum: BatonServer.Logger.Level =
      switch logger.logLevel {
      case .trace, .debug: .debug
      case .info, .notice: .info
      case .warning: .warning
      case .error, .critical: .error
      }
    return BatonServer.Logger(minimumLevel: minimum) { record in
      let level: SwiftLogLogger.Level =
        switch record.level {
        case .debug: .debug
        case .info: .info
        case .warning: .warning
        case .error: .error
        }
      var metadata = SwiftLogLogger.Metadata()
      for (key, value) in record.fields { metadata[key] = .string(value) }
      logger.log(level: level, "\(record.event)", metadata: metadata)
    }
  }
}

@Suite("README: metrics adapter, ServiceLifecycle and swift-log snippets (with stand-ins)", .serialized)
struct ReadmeConventionExamples {
  @Test("the swift-metrics adapter receives calls, GOAWAYs and the drain")
  func metricsAdapter() async throws {
    recorded.withLock { $0.removeAll() }
    let configuration = Server.Configuration(logger: .disabled, observer: SwiftMetricsObserver())
    let server = Server(configuration: configuration, router: echoRouter())
    let running = Task { try await server.run() }
    try await withClient(endpoints: [try await server.listeningAddress]) { client in
      _ = try await client.unary("echo/Unary", [UInt8]("hi"))
      await server.gracefulStop()
    }
    try await running.value
    let lines = recorded.withLock { $0 }
    #expect(lines.contains("baton_calls_started[\"method=echo/Unary\"]"))
    #expect(lines.contains("baton_calls_handled[\"method=echo/Unary\", \"code=ok\"]"))
    #expect(lines.contains("baton_handling timed"))
    #expect(lines.contains("baton_goaways_sent[]"))
    #expect(lines.contains("baton_connection_drain timed"))
  }

  @Test("a Baton server as a ServiceLifecycle service: graceful shutdown drains it and run() returns")
  func serviceLifecycle() async throws {
    let shutdown = GracefulShutdownStandIn()
    let server = Server(configuration: .init(handleSignals: false, logger: .disabled), router: echoRouter())
    let service = BatonService(server: server)
    let running = Task { try await GracefulShutdownStandIn.$current.withValue(shutdown) { try await service.run() } }
    try await withClient(endpoints: [try await server.listeningAddress]) { client in
      _ = try await client.unary("echo/Unary", [UInt8]("hi"))
      shutdown.trigger()
      let report = await server.stopReport()
      #expect(report.cutStreams.isEmpty)
    }
    try await running.value
    #expect(server.phase == .stopped)
  }

  @Test("the swift-log bridge keeps level, event and fields")
  func swiftLogBridge() async throws {
    let sink = SwiftLogLogger()
    let logger = Logger.swiftLog(sink)
    try await withServer(configuration: .init(logger: logger), router: echoRouter()) { _ in }
    let lines = sink.lines.withLock { $0 }
    let listening = try #require(lines.first { $0.1 == "listening" })
    #expect(listening.0 == .info)
    if case .string(let address)? = listening.2["address"] {
      #expect(address.hasPrefix("127.0.0.1:"))
    } else {
      Issue.record("no address field: \(listening.2)")
    }
    #expect(lines.contains { $0.1 == "stopped" && $0.2["drained"] != nil })
    logger.warning("cut", ("streams", "2"))
    #expect(sink.lines.withLock { $0.last?.0 } == .warning)
  }
}
