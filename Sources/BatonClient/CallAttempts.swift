import BatonCore
import BatonPosix
import BatonTransport
import Synchronization

/// The attempts of one call, shared by every call shape: where the next attempt may open, and
/// whether a failed one may be repeated.
///
/// A call repeats an attempt only when PROTOCOL.md 14 allows it: the server provably did not
/// process it (free, as often as the deadline allows), or the connection was lost and the call
/// is idempotent (costly: each such retry also takes one from the client-wide ``RetryThrottle``).
final class CallAttempts: Sendable {
  let deadline: UInt64?
  let timeout: UInt64
  /// When the call started (MonotonicClock ns): its deadline counts from here, and the retry
  /// budget records the call at this time.
  private let startedAt: UInt64
  let method: String
  private let options: CallOptions
  private let pool: ConnectionPool
  private let retriesLeft: Atomic<Int>
  private let sameConnectionPauses = Atomic<Int>(0)
  /// Whether the call has taken its first lease (which the retry budget counts).
  private let started = Atomic<Bool>(false)

  /// `startedAt`: the call's start if the caller read the clock already (its metrics did).
  init(
    method: String, options: CallOptions, pool: ConnectionPool, retriesWithoutDeadline: Int, startedAt: UInt64? = nil
  ) {
    self.method = method
    self.options = options
    self.pool = pool
    let now = startedAt ?? MonotonicClock.now()
    self.startedAt = now
    if let timeout = options.timeout {
      self.timeout = timeout.nanoseconds
      self.deadline = now &+ timeout.nanoseconds
      self.retriesLeft = Atomic(Int.max)
    } else {
      self.timeout = 0
      self.deadline = nil
      // At least two tries per endpoint, so a rolling restart (each server refusing once) fits.
      self.retriesLeft = Atomic(max(retriesWithoutDeadline, 2 * pool.endpointCount))
    }
  }

  /// Opens the stream of the next attempt on some connection, preferring one other than
  /// `avoiding` (where the last attempt failed). A connection that refuses the stream (GOAWAY
  /// crossed the call) is set aside and the next one tried; every way out without a stream
  /// gives the lease back.
  func open(
    avoiding: ObjectIdentifier?, message: [UInt8]? = nil, endStream: Bool = false, singleResponse: Bool = false,
    extraMetadata: Metadata? = nil
  ) async throws -> (ConnectionPool.Lease, StreamHandle) {
    while true {
      let newCall = !started.exchange(true, ordering: .relaxed)
      let lease = try await pool.lease(
        deadline: deadline, avoiding: avoiding, waitForReady: options.waitForReady, newCall: newCall, now: startedAt)
      do {
        if let avoiding, ObjectIdentifier(lease.connection) == avoiding {
          // Only the connection that just refused is ready: give it a moment before asking again.
          try await pauseBeforeSameConnection()
        }
        let stream = try lease.connection.openStream(
          try head(extraMetadata), message: message, endStream: endStream, singleResponse: singleResponse)
        if let deadline { stream.setDeadline(at: deadline, timeout: timeout) }
        return (lease, stream)
      } catch let error as ConnectionCore.OpenError {
        pool.release(lease)
        try await handle(error, lease)
      } catch {
        pool.release(lease)
        throw error
      }
    }
  }

  /// Throws the call's error unless `failure` may be retried: provably not processed, or lost
  /// and idempotent with the client's retry budget not spent, with time and retries left.
  /// Returns which of the two it is.
  func mayRetry(_ failure: StreamFailure) throws -> ClientEvent.RetryReason {
    let reason: ClientEvent.RetryReason
    switch failure {
    case .notProcessed:
      reason = .notProcessed
    case .connectionLost(let why) where options.idempotent:
      guard pool.mayRetryCostly() else {
        throw RPCError(
          code: .unavailable,
          message: "\(why); the call may have been processed, and the client's retry budget is spent")
      }
      reason = .idempotent
    default:
      throw failure.rpcError
    }
    try checkTime()
    guard retriesLeft.subtract(1, ordering: .relaxed).newValue >= 0 else { throw failure.rpcError }
    return reason
  }

  /// Throws the call's error unless it may be resumed after `failure` (PROTOCOL.md 18.4): the
  /// server asked for it, or the stream was lost or refused after a checkpoint (which, like an
  /// idempotent retry, takes from the client's retry budget). A resumption that follows no
  /// progress counts against the call's retries, so a server that keeps ending the stream at
  /// once cannot make it loop.
  func mayResume(_ failure: StreamFailure, progressed: Bool) throws {
    switch failure {
    case .resumable, .notProcessed:
      break
    case .connectionLost(let why):
      guard pool.mayRetryCostly() else {
        throw RPCError(
          code: .unavailable, message: "\(why); the stream could be resumed, but the client's retry budget is spent")
      }
    case .reset, .local:
      throw failure.rpcError
    }
    try checkTime()
    if !progressed {
      guard retriesLeft.subtract(1, ordering: .relaxed).newValue >= 0 else { throw failure.rpcError }
    }
  }

  func checkTime() throws {
    if let deadline, MonotonicClock.now() >= deadline {
      throw RPCError(
        code: .deadlineExceeded, message: "the deadline of \(Connection.describe(nanoseconds: timeout)) passed")
    }
  }

  /// The OPEN for an attempt, carrying the time the call has left.
  private func head(_ extra: Metadata? = nil) throws -> RequestHead {
    var micros: UInt64 = 0
    if let deadline {
      let now = MonotonicClock.now()
      guard now < deadline else {
        throw RPCError(
          code: .deadlineExceeded, message: "the deadline of \(Connection.describe(nanoseconds: timeout)) passed")
      }
      micros = max(1, (deadline - now + 999) / 1_000)  // rounded up: never shorter than asked
    }
    var metadata = options.metadata
    if let extra { for entry in extra.entries { metadata.add(entry.name, entry.value) } }
    return RequestHead(method: method, timeoutMicroseconds: micros, metadata: metadata)
  }

  /// A jittered pause, doubling from 1 ms to 100 ms, before retrying on the connection that just
  /// refused the call (PROTOCOL.md 14: not straight back to it).
  private func pauseBeforeSameConnection() async throws {
    let round = sameConnectionPauses.add(1, ordering: .relaxed).newValue
    let base = min(100_000_000, 1_000_000 << min(round - 1, 7))
    var pause = UInt64(Double(base) * Double.random(in: 0.8...1.2))
    if let deadline {
      let now = MonotonicClock.now()
      guard now < deadline else { return try checkTime() }
      pause = min(pause, deadline - now)
    }
    try await Task.sleep(for: .nanoseconds(Int64(pause)))
  }

  /// The connection could not take a new stream.
  private func handle(_ error: ConnectionCore.OpenError, _ lease: ConnectionPool.Lease) async throws {
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
      pool.setAside(lease.connection)
    case .tooManyStreams:
      await Task.yield()
    }
    try checkTime()
  }
}
