import BatonCore

#if canImport(Glibc)
import Glibc
#endif

extension Client {
  /// How a client connects, waits, and retries.
  public struct Configuration: Sendable {
    /// What this client announces in SETTINGS. Default ``ConnectionSettings/defaults``.
    public var connection: ConnectionSettings
    /// Longest a TCP connect may take. Default 5 s.
    public var connectTimeout: Duration
    /// Reconnect delays after a failed connect: `initial × multiplier^n`, ±`jitter`, at most
    /// `maximum`. Default 50 ms × 1.6, jitter 0.2, max 5 s.
    public var backoff: Backoff
    /// Calls that may wait for a connection (no endpoint ready, or every stream slot busy);
    /// one more fails with `resourceExhausted`. Default 10,000.
    public var maxWaitingCalls: Int
    /// How long a call *without a deadline* that waits for ready (``CallOptions/waitForReady``)
    /// waits for a ready connection before failing with `unavailable` (a call with a deadline
    /// waits until its deadline). Default 30 s.
    public var maxWaitForConnection: Duration
    /// Bytes of a streaming call's sent messages kept so that the call can be replayed on
    /// another endpoint if the server did not process it. Past this, such a call fails with
    /// `unavailable` instead of being replayed. Default 1 MiB per call.
    public var maxReplayBytes: Int
    /// Transparent retries of a call the server provably did not process, when the call has no
    /// deadline to bound them. Default 25.
    public var maxRetriesWithoutDeadline: Int
    /// Outbound bytes buffered per connection before reading pauses. Default 4 MiB.
    public var maxBufferedBytesPerConnection: Int
    /// Where lifecycle lines go. Default: nowhere (a client is a library inside someone's service).
    public var logger: Logger
    /// Run around every call, first outermost, before the call's own
    /// (``CallOptions/interceptors``). See ``ClientInterceptor``. Default none.
    public var interceptors: [any ClientInterceptor]

    /// Every knob at the default documented on its property.
    public static var defaults: Configuration { Configuration() }

    /// Every knob, each defaulting to the value documented on its property.
    public init(
      connection: ConnectionSettings = .defaults, connectTimeout: Duration = .seconds(5),
      backoff: Backoff = .defaults, maxWaitingCalls: Int = 10_000, maxWaitForConnection: Duration = .seconds(30),
      maxReplayBytes: Int = 1 << 20,
      maxRetriesWithoutDeadline: Int = 25, maxBufferedBytesPerConnection: Int = 4 << 20,
      logger: Logger = .disabled, interceptors: [any ClientInterceptor] = []
    ) {
      self.connection = connection
      self.connectTimeout = connectTimeout
      self.backoff = backoff
      self.maxWaitingCalls = maxWaitingCalls
      self.maxWaitForConnection = maxWaitForConnection
      self.maxReplayBytes = maxReplayBytes
      self.maxRetriesWithoutDeadline = maxRetriesWithoutDeadline
      self.maxBufferedBytesPerConnection = maxBufferedBytesPerConnection
      self.logger = logger
      self.interceptors = interceptors
    }
  }

  /// Jittered exponential reconnect backoff.
  public struct Backoff: Sendable, Hashable {
    /// The wait after the first failed connect.
    public var initial: Duration
    /// How much each further failure multiplies the wait.
    public var multiplier: Double
    /// Random spread of each wait, as a fraction (0.2 is ±20 %).
    public var jitter: Double
    /// The longest wait.
    public var maximum: Duration

    /// 50 ms, ×1.6, ±20 %, at most 5 s (PROTOCOL.md 14).
    public static var defaults: Backoff {
      Backoff(initial: .milliseconds(50), multiplier: 1.6, jitter: 0.2, maximum: .seconds(5))
    }

    /// A backoff from its four parts.
    public init(initial: Duration, multiplier: Double, jitter: Double, maximum: Duration) {
      self.initial = initial
      self.multiplier = multiplier
      self.jitter = jitter
      self.maximum = maximum
    }

    /// The delay before attempt `failures` (1 = after the first failure), in nanoseconds.
    func delay(afterFailures failures: Int) -> UInt64 {
      let base = Double(initial.nanoseconds) * pow(multiplier, Double(max(0, failures - 1)))
      let capped = min(base, Double(maximum.nanoseconds))
      let spread = capped * jitter
      return UInt64(max(0, capped + Double.random(in: -spread...spread)))
    }
  }
}

/// Per-call choices.
public struct CallOptions: Sendable {
  /// How long the call may take, retries and waiting for a connection included. nil: no limit.
  public var timeout: Duration?
  /// Sent with the call. Names are lower-case `a-z 0-9 - _ .`; names starting with `baton-` are
  /// reserved for the protocol: a call carrying an invalid or reserved name fails with
  /// `invalidArgument` before anything is sent.
  public var metadata: Metadata
  /// The method is safe to run twice: retry it even when a lost connection means it may have
  /// been processed. Calls the server provably did not process are retried regardless.
  public var idempotent: Bool
  /// false (the default): when no endpoint can be reached — every endpoint's last connect
  /// attempt failed (refused, timed out, the name did not resolve) — the call fails at once
  /// with `unavailable` and the reasons, after at most one connect attempt per endpoint.
  /// true: the call waits through reconnects for a ready connection, until its deadline (or,
  /// without one, ``Client/Configuration/maxWaitForConnection``). Either way a call waits while
  /// a connection is being made or every stream slot is busy.
  public var waitForReady: Bool
  /// Run around this call, inside the client's own (``Client/Configuration/interceptors``), first
  /// outermost. See ``ClientInterceptor``. Default none.
  public var interceptors: [any ClientInterceptor]

  /// No deadline, no metadata, not idempotent, fail fast.
  public static var defaults: CallOptions { CallOptions() }

  /// Options for one call; each defaults as documented on its property.
  public init(
    timeout: Duration? = nil, metadata: Metadata = [:], idempotent: Bool = false, waitForReady: Bool = false,
    interceptors: [any ClientInterceptor] = []
  ) {
    self.timeout = timeout
    self.metadata = metadata
    self.idempotent = idempotent
    self.waitForReady = waitForReady
    self.interceptors = interceptors
  }
}
