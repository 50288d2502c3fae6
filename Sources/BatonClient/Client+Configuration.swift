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
    /// How a new call picks among the ready connections. Default ``LoadBalancing/roundRobin``.
    public var loadBalancing: LoadBalancing
    /// Client keepalive: notices a server that went silent (frozen, partitioned) while calls
    /// wait on it. Default 1 s / 2 s: a silent server is left in about 3 s. nil turns it off.
    public var keepalive: Keepalive?
    /// How often the resolver is asked again, besides at once when a connection is lost or
    /// drains. Default 30 s; zero: only on those events.
    public var resolveInterval: Duration
    /// The client-wide allowance for retries of calls that may have been processed (idempotent
    /// calls after a lost connection). Default 20 % of recent calls plus 10 per second.
    public var retryBudget: RetryBudget
    /// Where lifecycle lines go. Default: nowhere (a client is a library inside someone's service).
    public var logger: Logger
    /// Run around every call, first outermost, before the call's own
    /// (``CallOptions/interceptors``). See ``ClientInterceptor``. Default none.
    public var interceptors: [any ClientInterceptor]
    /// Whether the client counts calls, retries, resumptions and per-endpoint traffic for
    /// ``Client/metricsPage`` (a few relaxed atomic adds and a clock read per call, one add per
    /// socket read or write). Off, ``Client/metricsPage`` is nil and the client adds nothing to
    /// a server page it is a ``MetricsExposition`` source of. Default true.
    public var collectsMetrics: Bool
    /// Constant labels added first to every sample of ``Client/metricsPage``, e.g.
    /// `["client": "inventory"]`: tells apart several clients exposed on one page. Names must
    /// be Prometheus label names, and not `method`, `code`, `le`, `reason` or `endpoint` (the
    /// page's own); others are left out (and logged). Default none.
    public var metricsLabels: [String: String]
    /// Told of calls, retries, resumptions, GOAWAYs and lost connections as they happen, to
    /// feed a metrics or tracing library (see ``ClientObserver``). Default none.
    public var observer: (any ClientObserver)?

    /// Every knob at the default documented on its property.
    public static var defaults: Configuration { Configuration() }

    /// Every knob, each defaulting to the value documented on its property.
    public init(
      connection: ConnectionSettings = .defaults, connectTimeout: Duration = .seconds(5),
      backoff: Backoff = .defaults, maxWaitingCalls: Int = 10_000, maxWaitForConnection: Duration = .seconds(30),
      maxReplayBytes: Int = 1 << 20,
      maxRetriesWithoutDeadline: Int = 25, maxBufferedBytesPerConnection: Int = 4 << 20,
      loadBalancing: LoadBalancing = .roundRobin, keepalive: Keepalive? = .defaults,
      resolveInterval: Duration = .seconds(30), retryBudget: RetryBudget = .defaults,
      logger: Logger = .disabled, interceptors: [any ClientInterceptor] = [], collectsMetrics: Bool = true,
      metricsLabels: [String: String] = [:], observer: (any ClientObserver)? = nil
    ) {
      self.collectsMetrics = collectsMetrics
      self.metricsLabels = metricsLabels
      self.observer = observer
      self.loadBalancing = loadBalancing
      self.keepalive = keepalive
      self.resolveInterval = resolveInterval
      self.retryBudget = retryBudget
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

  /// How a new call picks among the ready connections (one per address).
  public enum LoadBalancing: Sendable, Hashable {
    /// Each ready connection in turn.
    case roundRobin
    /// Of two ready connections chosen at random, the one with fewer calls running ("power of
    /// two choices"). Steers calls away from a server whose calls stopped completing (frozen,
    /// overloaded) before keepalive notices, and evens out calls of unequal length.
    case leastLoaded
  }

  /// When and how fast a client notices a silent server (PROTOCOL.md 15).
  ///
  /// When calls wait on a connection and nothing at all has arrived for `interval`, the client
  /// sends a PING; if nothing arrives within `timeout` after it, the connection is closed: calls
  /// the server provably did not process go elsewhere, the others fail `unavailable` ("may have
  /// been processed") unless idempotent. A busy connection never pings (every frame is a sign of
  /// life). The server's ping policing allows 10 PINGs a second, far above 1 per interval; a
  /// server that answers "too many pings" gets half as many (the interval doubles).
  public struct Keepalive: Sendable, Hashable {
    /// Silence before a PING.
    public var interval: Duration
    /// Wait for any frame after the PING before the connection counts as dead.
    public var timeout: Duration
    /// Ping connections with no call too (keeps NAT and proxy state alive). Default false.
    public var whenIdle: Bool

    /// 1 s, 2 s, only while calls wait. The timeout is twice the interval so that a server
    /// that is alive but briefly starved (a loaded machine, a handler hogging its loop for a
    /// second) is not mistaken for a dead one: leaving it would fail its calls for nothing.
    public static var defaults: Keepalive { Keepalive(interval: .seconds(1), timeout: .seconds(2)) }

    /// A keepalive policy from its parts.
    public init(interval: Duration, timeout: Duration, whenIdle: Bool = false) {
      self.interval = interval
      self.timeout = timeout
      self.whenIdle = whenIdle
    }
  }

  /// The client-wide budget for retries that are not free (Finagle's retry budget): within any
  /// `window`, at most `ratio` of the calls started plus `minimumPerSecond` per second of it.
  /// Retries of calls the server provably did not process are free and not counted.
  public struct RetryBudget: Sendable, Hashable {
    /// Retries allowed per call started (0.2: one retry per five calls).
    public var ratio: Double
    /// Retries allowed per second regardless of traffic (a quiet client can still retry).
    public var minimumPerSecond: Double
    /// How far back calls and retries count.
    public var window: Duration

    /// 20 % + 10/s over 10 s.
    public static var defaults: RetryBudget { RetryBudget(ratio: 0.2, minimumPerSecond: 10, window: .seconds(10)) }

    /// A budget from its parts.
    public init(ratio: Double, minimumPerSecond: Double, window: Duration) {
      self.ratio = ratio
      self.minimumPerSecond = minimumPerSecond
      self.window = window
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
