import BatonCore
package import BatonPosix
import BatonTransport
import Foundation
import Synchronization

/// A Baton client over one or more endpoints.
///
/// Calls are balanced round-robin over the endpoints' ready connections. When a server drains
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
public final class Client: Sendable {
  /// What the client was created with.
  public let configuration: Configuration
  let pool: EndpointPool
  let counters = Counters()

  /// Creates a client and starts connecting to every endpoint in the background.
  public convenience init(endpoints: [Endpoint], configuration: Configuration = .defaults) {
    self.init(endpoints: endpoints, configuration: configuration, group: .shared)
  }

  package init(endpoints: [Endpoint], configuration: Configuration, group: EventLoopGroup) {
    self.configuration = configuration
    self.pool = EndpointPool(endpoints: endpoints, configuration: configuration, group: group)
  }

  /// The event loop that carries the first endpoint's connection, as a task executor.
  ///
  /// Callers that run on it (`withTaskExecutorPreference(client.preferredExecutor) { ... }`)
  /// take no thread hop between the caller, the write of the request and the wake-up on the
  /// reply: the lowest latency Baton offers (its server runs handlers the same way). Code run
  /// there must not block the thread; it shares it with the connection's I/O.
  public var preferredExecutor: any TaskExecutor { pool.loop(forEndpoint: 0) }

  /// Waits until `endpoints` of the endpoints (default: all) have a ready connection. Calls do
  /// not need this (they wait for a connection being made); it is for start-up checks and tests.
  /// - Throws: ``RPCError`` `deadlineExceeded` after `timeout`.
  public func waitUntilReady(endpoints: Int? = nil, timeout: Duration = .seconds(10)) async throws {
    try await pool.waitUntilReady(
      minimum: endpoints ?? pool.snapshot.count, deadline: MonotonicClock.now() &+ timeout.nanoseconds)
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
  }

  /// The counts so far (relaxed reads: for dashboards and tests, not for synchronisation).
  public var statistics: Statistics {
    Statistics(
      succeeded: counters.succeeded.load(ordering: .relaxed), failed: counters.failed.load(ordering: .relaxed),
      retried: counters.retried.load(ordering: .relaxed))
  }

  /// Per endpoint: whether it has a ready connection, how many calls run on it, how many old
  /// (draining) connections still finish calls.
  public var endpointStates: [(endpoint: Endpoint, ready: Bool, calls: Int, draining: Int)] { pool.snapshot }

  final class Counters: Sendable {
    let succeeded = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let retried = Atomic<Int>(0)
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
    do {
      let response =
        hasInterceptors(options)
        ? try await interceptedUnary(method, request, options, performUnary)
        : try await performUnary(method, request, options)
      counters.succeeded.add(1, ordering: .relaxed)
      return response
    } catch {
      counters.failed.add(1, ordering: .relaxed)
      throw Self.rpcError(error)
    }
  }

  private func performUnary(_ method: String, _ request: [UInt8], _ options: CallOptions) async throws -> UnaryResponse
  {
    if !options.metadata.isEmpty { try MetadataRules.check(options.metadata) }
    let budget = RetryBudget(
      options: options, retriesWithoutDeadline: configuration.maxRetriesWithoutDeadline, endpoints: pool.endpointCount)
    var avoiding: ObjectIdentifier?
    while true {
      let lease = try await pool.lease(
        deadline: budget.deadline, avoiding: avoiding, waitForReady: options.waitForReady)
      if let avoiding, ObjectIdentifier(lease.connection) == avoiding {
        // Only the connection that just refused is ready: give it a moment before asking again.
        do { try await budget.pauseBeforeSameConnection() } catch {
          pool.release(lease)
          throw error
        }
      }
      let stream: StreamHandle
      do {
        stream = try lease.connection.openStream(
          try budget.head(method, options), message: request, endStream: true, singleResponse: true)
      } catch let error as ConnectionCore.OpenError {
        pool.release(lease)
        try await handleOpenError(error, lease, budget)
        continue
      } catch {
        // The deadline passed between taking the lease and opening the stream: every path
        // out gives the lease back, or `close()` would wait for it forever.
        pool.release(lease)
        throw error
      }
      if let deadline = budget.deadline { stream.setDeadline(at: deadline, timeout: budget.timeout) }
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
        try budget.mayRetry(failure, idempotent: options.idempotent)
        counters.retried.add(1, ordering: .relaxed)
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

  /// The connection could not take a new stream. GOAWAY crossed the call: move on.
  func handleOpenError(_ error: ConnectionCore.OpenError, _ lease: EndpointPool.Lease, _ budget: RetryBudget)
    async throws
  {
    switch error {
    case .metadataTooLarge(let size, let limit):
      throw RPCError(
        code: .resourceExhausted, message: "call metadata of \(size) bytes exceeds the server's limit of \(limit)")
    case .frameTooLarge(let size, let limit):
      throw RPCError(
        code: .resourceExhausted,
        message: "the call's method and metadata take \(size) bytes, more than the server's frame limit of \(limit)")
    case .invalidMethod(let length):
      throw RPCError(code: .invalidArgument, message: "a method name must be 1 to 65,535 bytes, not \(length)")
    case .messageTooLarge(let size, let limit):
      throw RPCError(
        code: .resourceExhausted, message: "request of \(size) bytes exceeds the server's limit of \(limit)")
    case .goingAway, .notReady:
      pool.markDraining(lease.connection)
    case .tooManyStreams:
      await Task.yield()
    }
    try budget.checkTime()
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

/// One call's deadline and retry allowance.
final class RetryBudget: Sendable {
  let deadline: UInt64?
  let timeout: UInt64
  private let retriesLeft: Atomic<Int>

  init(options: CallOptions, retriesWithoutDeadline: Int, endpoints: Int) {
    if let timeout = options.timeout {
      self.timeout = timeout.nanoseconds
      self.deadline = MonotonicClock.now() &+ timeout.nanoseconds
      self.retriesLeft = Atomic(Int.max)
    } else {
      self.timeout = 0
      self.deadline = nil
      // At least two tries per endpoint, so a rolling restart (each server refusing once) fits.
      self.retriesLeft = Atomic(max(retriesWithoutDeadline, 2 * endpoints))
    }
  }

  /// The OPEN for an attempt, carrying the time the call has left.
  func head(_ method: String, _ options: CallOptions) throws -> RequestHead {
    var micros: UInt64 = 0
    if let deadline {
      let now = MonotonicClock.now()
      guard now < deadline else {
        throw RPCError(
          code: .deadlineExceeded, message: "the deadline of \(Connection.describe(nanoseconds: timeout)) passed")
      }
      micros = max(1, (deadline - now + 999) / 1_000)  // rounded up: never shorter than asked
    }
    return RequestHead(method: method, timeoutMicroseconds: micros, metadata: options.metadata)
  }

  private let sameConnectionPauses = Atomic<Int>(0)

  /// A jittered pause, doubling from 1 ms to 100 ms, before retrying on the connection that just
  /// refused the call (PROTOCOL.md 14: not straight back to it).
  func pauseBeforeSameConnection() async throws {
    let round = sameConnectionPauses.add(1, ordering: .relaxed).newValue
    let base = min(100_000_000, 1_000_000 << min(round - 1, 7))
    var pause = UInt64(Double(base) * Double.random(in: 0.8...1.2))
    if let deadline {
      let now = MonotonicClock.now()
      guard now < deadline else { try checkTime(); return }
      pause = min(pause, deadline - now)
    }
    try await Task.sleep(for: .nanoseconds(Int64(pause)))
  }

  func checkTime() throws {
    if let deadline, MonotonicClock.now() >= deadline {
      throw RPCError(
        code: .deadlineExceeded, message: "the deadline of \(Connection.describe(nanoseconds: timeout)) passed")
    }
  }

  /// Throws unless `failure` may be retried: provably not processed, or lost and idempotent,
  /// with time and retries left.
  func mayRetry(_ failure: StreamFailure, idempotent: Bool) throws {
    switch failure {
    case .notProcessed:
      break
    case .connectionLost where idempotent:
      break
    default:
      throw failure.rpcError
    }
    try checkTime()
    guard retriesLeft.subtract(1, ordering: .relaxed).newValue >= 0 else { throw failure.rpcError }
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
