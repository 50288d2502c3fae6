import BatonCore
package import BatonPosix
import BatonTransport
import Foundation
import Synchronization

/// A Baton client over one or more endpoints.
///
/// Every address of the endpoints' names (or of a ``Resolver``'s answer) gets a connection, and
/// calls are balanced over the ready ones (round-robin, or ``LoadBalancing/leastLoaded``). A
/// server that goes silent while calls wait is left after the ``Configuration/keepalive``
/// timeout. When a server drains
/// (GOAWAY), its running calls finish there while new calls go elsewhere; a call the server
/// provably did not process is retried on another endpoint, transparently and as often as its
/// deadline allows; a call that may have been processed fails with `unavailable` unless marked
/// ``CallOptions/idempotent``. When no endpoint can be reached (each one's last connect attempt
/// failed), a call fails at once with `unavailable` and the reasons, unless it asked to wait
/// (``CallOptions/waitForReady``).
///
/// ```swift
/// try await withClient(endpoints: [Endpoint(host: "127.0.0.1", port: 8080)]) { client in
///   let reply = try await client.unary("echo.Echo/Unary", Array("hi".utf8))
/// }
/// ```
public final class Client: MetricsExposition {
  /// What the client was created with.
  public let configuration: Configuration
  let pool: ConnectionPool
  let counters = Counters()
  /// nil when the configuration turned metrics off.
  let metrics: ClientMetrics?
  let observer: (any ClientObserver)?
  /// `observer != nil`, read on the per-call path instead of copying the optional existential.
  let observes: Bool
  /// Whether a call is metered at all (metrics or an observer).
  let measures: Bool

  /// Creates a client over every address of `endpoints` and starts connecting in the background.
  ///
  /// Each endpoint may be a numeric address or a name; every A/AAAA record of a name is its
  /// own endpoint with its own connection (a Kubernetes headless Service gives one per pod), and
  /// names are resolved again periodically and whenever a connection is lost or drains (see
  /// ``DNSResolver``). For one connection per entry as given, use
  /// `Client(resolver: StaticResolver(endpoints))`.
  public convenience init(endpoints: [Endpoint], configuration: Configuration = .defaults) {
    self.init(resolver: DNSResolver(endpoints), configuration: configuration, group: .shared)
  }

  /// Creates a client whose endpoints come from `resolver` (your own discovery, see ``Resolver``).
  public convenience init(resolver: any Resolver, configuration: Configuration = .defaults) {
    self.init(resolver: resolver, configuration: configuration, group: .shared)
  }

  package convenience init(endpoints: [Endpoint], configuration: Configuration, group: EventLoopGroup) {
    self.init(resolver: DNSResolver(endpoints), configuration: configuration, group: group)
  }

  package init(resolver: any Resolver, configuration: Configuration, group: EventLoopGroup) {
    self.configuration = configuration
    self.pool = ConnectionPool(resolver: resolver, configuration: configuration, group: group)
    self.observer = configuration.observer
    self.observes = configuration.observer != nil
    self.measures = configuration.collectsMetrics || configuration.observer != nil
    if configuration.collectsMetrics {
      let (labels, dropped) = ClientMetrics.constantLabels(configuration.metricsLabels)
      if !dropped.isEmpty {
        configuration.logger.log(
          .warning, "metrics labels left out (not label names, or reserved)",
          ("labels", dropped.joined(separator: ",")))
      }
      self.metrics = ClientMetrics(labels: labels)
    } else {
      self.metrics = nil
    }
  }

  /// The event loop that carries the first endpoint's connection, as a task executor.
  ///
  /// Callers that run on it (`withTaskExecutorPreference(client.preferredExecutor) { ... }`)
  /// take no thread hop between the caller, the write of the request and the wake-up on the
  /// reply: the lowest latency Baton offers (its server runs handlers the same way). Code run
  /// there must not block the thread; it shares it with the connection's I/O.
  public var preferredExecutor: any TaskExecutor { pool.preferredLoop }

  /// Waits until `endpoints` of the endpoints (default: all) have a ready connection. Calls do
  /// not need this (they wait for a connection being made); it is for start-up checks and tests.
  /// - Throws: ``RPCError`` `deadlineExceeded` after `timeout`.
  public func waitUntilReady(endpoints: Int? = nil, timeout: Duration = .seconds(10)) async throws {
    try await pool.waitUntilReady(minimum: endpoints, deadline: MonotonicClock.now() &+ timeout.nanoseconds)
  }

  /// For diagnostics (a hung test's watchdog): the pool's leases, waiters and connections.
  package var debugState: String { pool.debugState }

  /// Calls parked waiting for a ready connection (for tests: "the call is waiting now").
  package var waitingCalls: Int { pool.waitingCalls }

  /// Stops taking calls, waits for running ones, closes the connections.
  public func close() async { await pool.close() }

  /// Counts since the client was created.
  public struct Statistics: Sendable, Hashable {
    /// Calls that ended with OK.
    public var succeeded: Int
    /// Calls that ended with an error.
    public var failed: Int
    /// Attempts repeated on another connection because the first was not processed (or, for an
    /// idempotent call, was lost).
    public var retried: Int
    /// Streams continued on a new stream from a server's checkpoint (protocol 1.1): the server
    /// stopped or the connection was lost, and the caller saw no gap and no duplicate.
    public var resumed: Int
  }

  /// The counts so far (relaxed reads: for dashboards and tests, not for synchronisation).
  public var statistics: Statistics {
    Statistics(
      succeeded: counters.succeeded.load(ordering: .relaxed), failed: counters.failed.load(ordering: .relaxed),
      retried: counters.retried.load(ordering: .relaxed), resumed: counters.resumed.load(ordering: .relaxed))
  }

  /// The client's series in the Prometheus text exposition format 0.0.4, nil when
  /// ``Configuration/collectsMetrics`` is off. Serve it yourself, or have a server include it
  /// in its own `GET /metrics` (`Server.Configuration.metricsSources`: one page for a service
  /// that is both).
  ///
  /// By method (`method`, the first 100 distinct names; later ones share `method="other"`):
  /// `baton_client_calls_started_total`, `baton_client_calls_handled_total` (with `code`, the
  /// status the caller saw: `ok` or an ``RPCError/Code`` name) and the histogram
  /// `baton_client_call_seconds` (the whole call as the caller saw it, retries included).
  /// `baton_client_retries_total` by `reason`: `not_processed` (free, transparent) or
  /// `idempotent` (costly); `baton_client_resumptions_total`. By `endpoint` (`host:port`, each
  /// address in use; a removed one leaves once its last connection closes):
  /// `baton_client_attempts_total`, `baton_client_goaways_received_total`,
  /// `baton_client_connections_lost_total`, `baton_client_open_connections`,
  /// `baton_client_active_calls`, `baton_client_sent_bytes_total`,
  /// `baton_client_received_bytes_total`. ``Configuration/metricsLabels`` come first in every
  /// sample.
  public var metricsPage: String? {
    guard metrics != nil else { return nil }
    var page = PrometheusPage()
    writeMetrics(into: &page)
    return page.text
  }

  /// Writes the client's series (see ``metricsPage``) into `page`; nothing when
  /// ``Configuration/collectsMetrics`` is off.
  public func writeMetrics(into page: inout PrometheusPage) {
    guard let metrics else { return }
    metrics.write(pool.endpointMetrics, into: &page)
  }

  /// Each address the client uses now (every address of a name is one), with its counts.
  public var endpointStates: [EndpointState] { pool.snapshot }

  /// One address the client sends calls to, and what happened there since it was added.
  public struct EndpointState: Sendable, Hashable {
    /// The address.
    public var endpoint: Endpoint
    /// A connection is ready for new calls.
    public var ready: Bool
    /// Calls running on the ready connection.
    public var activeCalls: Int
    /// Older connections that received GOAWAY and still finish their calls.
    public var drainingConnections: Int
    /// Call attempts sent here, counted as each ends (a retried call counts once per attempt).
    public var attempts: Int
    /// GOAWAYs received from this address.
    public var goAwaysReceived: Int
    /// Ready connections that ended without GOAWAY (lost, reset, or silent past the keepalive).
    public var connectionsLost: Int
    /// Why no connection is ready, when none is.
    public var lastError: String?
  }

  final class Counters: Sendable {
    let succeeded = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let retried = Atomic<Int>(0)
    let resumed = Atomic<Int>(0)
  }

  // MARK: - Unary

  /// A unary call's reply with its metadata.
  public struct UnaryResponse: Sendable {
    /// The one response message.
    public var message: [UInt8]
    /// The response metadata the server sent first (empty if none).
    public var headers: Metadata
    /// The trailing metadata the server sent with its status.
    public var trailers: Metadata
  }

  /// Sends one message and returns the reply.
  /// - Throws: ``RPCError``: the server's status, `deadlineExceeded`, `cancelled` when the task
  ///   is cancelled (the stream is reset), `unavailable` when no endpoint could take the call.
  public func unary(_ method: String, _ request: [UInt8], options: CallOptions = .defaults) async throws -> [UInt8] {
    try await unaryResponse(method, request, options: options).message
  }

  /// A unary call with `Codable` messages, JSON-encoded.
  public func unary<Request: Encodable & Sendable, Response: Decodable & Sendable>(
    _ method: String, _ request: Request, as response: Response.Type, options: CallOptions = .defaults
  ) async throws -> Response {
    let bytes = try await unary(method, try JSONCoding.encode(request), options: options)
    return try JSONCoding.decode(Response.self, from: bytes)
  }

  /// Like ``unary(_:_:options:)`` but with the response's headers and trailers.
  public func unaryResponse(
    _ method: String, _ request: [UInt8], options: CallOptions = .defaults
  ) async throws -> UnaryResponse {
    let meter = meterStart(method)
    do {
      let response =
        hasInterceptors(options)
        ? try await interceptedUnary(method, request, options)
        : try await performUnary(method, request, options, startedAt: meter?.start)
      counters.succeeded.add(1, ordering: .relaxed)
      if let meter { meterEnd(meter, method, nil) }
      return response
    } catch {
      counters.failed.add(1, ordering: .relaxed)
      let error = Self.rpcError(error)
      if let meter { meterEnd(meter, method, error) }
      throw error
    }
  }

  /// `startedAt`: the call's start, when already read (saves reading the clock again).
  func performUnary(
    _ method: String, _ request: [UInt8], _ options: CallOptions, startedAt: UInt64? = nil
  ) async throws -> UnaryResponse {
    if !options.metadata.isEmpty { try MetadataRules.check(options.metadata) }
    let attempts = CallAttempts(
      method: method, options: options, pool: pool, retriesWithoutDeadline: configuration.maxRetriesWithoutDeadline,
      startedAt: startedAt)
    var avoiding: ObjectIdentifier?
    while true {
      let (lease, stream) = try await attempts.open(
        avoiding: avoiding, message: request, endStream: true, singleResponse: true)
      do {
        try await stream.awaitEnd()
      } catch {
        stream.release()
        pool.release(lease, streamOpened: true)
        throw error
      }
      let response = stream.takeResponse()
      pool.release(lease, streamOpened: true)
      if let failure = response.failure {
        noteRetry(try attempts.mayRetry(failure), method: method)
        avoiding = ObjectIdentifier(lease.connection)
        continue
      }
      if let error = response.trailers?.error { throw error }
      guard let message = response.message else {
        throw RPCError(code: .internal, message: "the server ended a unary call without a reply")
      }
      return UnaryResponse(
        message: message, headers: response.headers ?? [:], trailers: response.trailers?.metadata ?? [:])
    }
  }

  static func rpcError(_ error: any Error) -> any Error {
    switch error {
    case let failure as StreamFailure: failure.rpcError
    case is CancellationError: RPCError(code: .cancelled, message: "the call was cancelled")
    default: error
    }
  }
}

/// Creates a client, runs `body`, and closes the client however `body` ends.
public func withClient<Result: Sendable>(
  endpoints: [Endpoint], configuration: Client.Configuration = .defaults,
  _ body: (Client) async throws -> Result
) async throws -> Result {
  let client = Client(endpoints: endpoints, configuration: configuration)
  do {
    let result = try await body(client)
    await client.close()
    return result
  } catch {
    await client.close()
    throw error
  }
}

enum JSONCoding {
  static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
    do {
      return Array(try JSONEncoder().encode(value))
    } catch {
      throw RPCError(code: .invalidArgument, message: "could not encode \(T.self) as JSON: \(error)")
    }
  }
  static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
    do {
      return try JSONDecoder().decode(T.self, from: Data(bytes))
    } catch {
      throw RPCError(code: .internal, message: "the reply is not a valid JSON \(T.self): \(error)")
    }
  }
}
