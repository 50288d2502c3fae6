import BatonCore

extension Server {
  /// How a server listens, what it allows, and how it stops.
  public struct Configuration: Sendable {
    /// Address to bind. Default `127.0.0.1`; use `0.0.0.0` or `::` to listen on every interface.
    public var host: String
    /// Port to bind; 0 picks a free one (read it back with ``Server/listeningAddress``).
    public var port: Int
    /// Pending-connection queue length handed to `listen(2)`. Default 1,024.
    public var backlog: Int32
    /// What this server announces in SETTINGS: frame, metadata and message sizes, streams per
    /// connection, flow-control windows. Default ``ConnectionSettings/defaults``.
    public var connection: ConnectionSettings
    /// Connections served at once; a connection beyond it gets GOAWAY (last stream 0, so the
    /// client retries elsewhere) and is closed. Default 10,000.
    public var maxConnections: Int
    /// Outbound bytes buffered per connection before the server stops reading from it until the
    /// client catches up. Default 4 MiB.
    public var maxBufferedBytesPerConnection: Int
    /// Whether the text of an error that is not an ``RPCError`` reaches the client. Default
    /// false: the client sees `internal` with a generic message, and the log has the details.
    public var exposeErrorDetails: Bool
    /// Graceful-stop behaviour.
    public var shutdown: Shutdown
    /// Connection age, idleness, keepalive and ping policing.
    public var connectionManagement: ConnectionManagement
    /// How long a new connection may take to send its preface and SETTINGS before it is closed
    /// (GOAWAY PROTOCOL_ERROR "handshake timeout"). Default 10 s.
    public var handshakeTimeout: Duration
    /// How long one frame may take to arrive once its first byte has (a peer dripping a large
    /// frame byte by byte would otherwise hold its connection for ever). Crossing it closes the
    /// connection with GOAWAY(ENHANCE_YOUR_CALM, "frame timeout ..."). Default 10 s.
    public var frameTimeout: Duration
    /// SIGTERM/SIGINT: the first starts ``Server/gracefulStop(deadline:)`` with
    /// ``Shutdown/deadline``, a second stops at once. Default false (a library should not take
    /// the process's signals unless asked).
    public var handleSignals: Bool
    /// Where lifecycle lines go. Default standard error.
    public var logger: Logger
    /// A plain-HTTP port for orchestrators' probes, on ``host``: `GET /livez` (200 until the
    /// process stops), `GET /readyz` (200 while serving, 503 from the first instant of a stop),
    /// `GET /drainz` (JSON: phase, open streams per connection, oldest stream's age),
    /// `GET /metrics` (Prometheus text format 0.0.4, see ``collectsMetrics``). nil (the
    /// default) serves none; 0 picks a free port (read it back with ``Server/healthAddress``).
    public var healthPort: Int?
    /// Whether the server counts calls, connections, drains and bytes for `GET /metrics` on the
    /// health port (and ``Server/metricsPage``). A few relaxed atomic adds per call. Default true.
    public var collectsMetrics: Bool
    /// Told of calls, connections, GOAWAYs and drains as they happen, to feed a metrics or
    /// tracing library (see ``ServerObserver``). Default none.
    public var observer: (any ServerObserver)?
    /// More series for this server's `GET /metrics` and ``Server/metricsPage``, written after
    /// its own, in this order, at every scrape: for a service that is also a client, its
    /// ``Client`` (one scrape target for both sides). See ``MetricsExposition``. Ignored when
    /// ``collectsMetrics`` is off (the server then serves no page). Default none.
    public var metricsSources: [any MetricsExposition]

    /// Binds 127.0.0.1 on a free port with the defaults above.
    public static var defaults: Configuration { Configuration() }

    /// Every knob, each defaulting to the value documented on its property.
    public init(
      host: String = "127.0.0.1", port: Int = 0, backlog: Int32 = 1_024,
      connection: ConnectionSettings = .defaults, maxConnections: Int = 10_000,
      maxBufferedBytesPerConnection: Int = 4 << 20, exposeErrorDetails: Bool = false,
      shutdown: Shutdown = .defaults, handleSignals: Bool = false, logger: Logger = .standardError,
      healthPort: Int? = nil, connectionManagement: ConnectionManagement = .defaults,
      handshakeTimeout: Duration = .seconds(10), frameTimeout: Duration = .seconds(10),
      collectsMetrics: Bool = true, observer: (any ServerObserver)? = nil,
      metricsSources: [any MetricsExposition] = []
    ) {
      self.collectsMetrics = collectsMetrics
      self.metricsSources = metricsSources
      self.observer = observer
      self.handshakeTimeout = handshakeTimeout
      self.frameTimeout = frameTimeout
      self.connectionManagement = connectionManagement
      self.healthPort = healthPort
      self.host = host
      self.port = port
      self.backlog = backlog
      self.connection = connection
      self.maxConnections = maxConnections
      self.maxBufferedBytesPerConnection = maxBufferedBytesPerConnection
      self.exposeErrorDetails = exposeErrorDetails
      self.shutdown = shutdown
      self.handleSignals = handleSignals
      self.logger = logger
    }
  }

  /// The graceful stop's timings.
  public struct Shutdown: Sendable, Hashable {
    /// How long open streams may run after the stop begins before they are cut. Default 30 s.
    public var deadline: Duration
    /// Time between "not ready" and the first GOAWAY, for load balancers to notice (what a
    /// Kubernetes preStop sleep does). Default 0.
    public var readinessPropagationDelay: Duration
    /// The longest wait for the PING that separates the two GOAWAYs. The wait is four round
    /// trips as measured on the connection, at least 10 ms, at most this. Default 1 s.
    public var goAwayBarrierCap: Duration
    /// After cutting streams at the deadline, how long to wait for the last frames to flush
    /// before closing anyway. Default 1 s.
    public var flushGrace: Duration

    /// 30 s deadline, no propagation delay, 1 s barrier cap, 1 s flush grace.
    public static var defaults: Shutdown { Shutdown() }

    /// Every timing, each defaulting to the value documented on its property.
    public init(
      deadline: Duration = .seconds(30), readinessPropagationDelay: Duration = .zero,
      goAwayBarrierCap: Duration = .seconds(1), flushGrace: Duration = .seconds(1)
    ) {
      self.deadline = deadline
      self.readinessPropagationDelay = readinessPropagationDelay
      self.goAwayBarrierCap = goAwayBarrierCap
      self.flushGrace = flushGrace
    }
  }
}

extension Server {
  /// How long connections live and how they are kept honest. Every timer here uses the same
  /// two-phase GOAWAY as a graceful stop, so clients move their new calls without failing any.
  public struct ConnectionManagement: Sendable, Hashable {
    /// A connection older than this is drained (GOAWAY) so that clients reconnect, which
    /// rebalances them across servers after a scale-up. Default nil: no limit.
    public var maxAge: Duration?
    /// Spread of ``maxAge`` (±fraction) so that connections made together do not all go
    /// together. Default 0.1.
    public var maxAgeJitter: Double
    /// After ``maxAge``, how long that connection's open calls may still run before they are cut.
    /// Default 30 s.
    public var maxAgeGrace: Duration
    /// A connection with no call for this long is drained and closed. Default nil: never.
    public var idleTimeout: Duration?
    /// With nothing received for this long, the server sends a PING; default 2 hours (as gRPC).
    public var keepaliveInterval: Duration?
    /// No answer to that PING within this long closes the connection. Default 20 s.
    public var keepaliveTimeout: Duration
    /// PINGs a client may send per second (and in a burst); beyond that the connection gets
    /// GOAWAY(ENHANCE_YOUR_CALM, "too many pings"). Default 10; 0 turns policing off.
    public var maxPingsPerSecond: Int

    /// No age limit or idle timeout, keepalive every 2 h with a 20 s timeout, 10 pings/s.
    public static var defaults: ConnectionManagement { ConnectionManagement() }

    /// Every knob, each defaulting to the value documented on its property.
    public init(
      maxAge: Duration? = nil, maxAgeJitter: Double = 0.1, maxAgeGrace: Duration = .seconds(30),
      idleTimeout: Duration? = nil, keepaliveInterval: Duration? = .seconds(7_200),
      keepaliveTimeout: Duration = .seconds(20), maxPingsPerSecond: Int = 10
    ) {
      self.maxAge = maxAge
      self.maxAgeJitter = maxAgeJitter
      self.maxAgeGrace = maxAgeGrace
      self.idleTimeout = idleTimeout
      self.keepaliveInterval = keepaliveInterval
      self.keepaliveTimeout = keepaliveTimeout
      self.maxPingsPerSecond = maxPingsPerSecond
    }
  }
}
