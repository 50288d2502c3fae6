import BatonCore
import BatonPosix
import Foundation

// The health endpoint's answers (`/livez`, `/readyz`, `/drainz`, `/metrics`) and the state
// they show: readiness, drain progress, the metrics page.
extension Server {
  func healthAnswer(_ path: String) -> (Int, String, String) {
    switch path {
    case "/livez":
      return (200, "text/plain", "ok\n")
    case "/readyz":
      return isReady ? (200, "text/plain", "ready\n") : (503, "text/plain", "draining\n")
    case "/drainz":
      let progress = self.progress
      let connections = progress.connections.map { connection -> [String: Any] in
        var entry: [String: Any] = [
          "peer": connection.peer, "open_streams": connection.openStreams, "drain_phase": connection.drainPhase,
        ]
        if let oldest = connection.oldestStream { entry["oldest_stream_ms"] = Int(oldest.nanoseconds / 1_000_000) }
        return entry
      }
      let document: [String: Any] = [
        "phase": progress.phase, "ready": isReady, "open_streams": progress.openStreams,
        "connections": connections,
      ]
      let data = (try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])) ?? Data("{}".utf8)
      return (200, "application/json", String(decoding: data, as: UTF8.self) + "\n")
    case "/metrics":
      guard let page = metricsPage else { return (404, "text/plain", "metrics are off (collectsMetrics)\n") }
      return (200, "text/plain; version=0.0.4; charset=utf-8", page)
    default:
      return (404, "text/plain", "unknown path; try /livez, /readyz, /drainz or /metrics\n")
    }
  }

  // MARK: - Metrics

  /// The `GET /metrics` page: Prometheus text exposition format 0.0.4. Calls started and
  /// handled by method and status, handling time by method, open connections and streams,
  /// GOAWAYs, connection drains, cut streams, bytes in and out. nil when
  /// ``Configuration/collectsMetrics`` is off. The series of
  /// ``Configuration/metricsSources`` (a client of this service) follow the server's own.
  public var metricsPage: String? {
    guard let metrics = dispatcher.metrics else { return nil }
    let (connections, streams) = openConnectionsAndCalls
    var page = PrometheusPage()
    metrics.write(.init(openConnections: connections, openStreams: streams), into: &page)
    for source in configuration.metricsSources { source.writeMetrics(into: &page) }
    return page.text
  }

  // MARK: - Drain progress

  /// What the server is still waiting for, per connection: for logs, metrics and `/drainz`.
  public struct Progress: Sendable {
    /// One connection's part of a drain.
    public struct ConnectionProgress: Sendable {
      /// The client's address.
      public var peer: String
      /// Calls still open on it.
      public var openStreams: Int
      /// Age of the oldest open stream, if any.
      public var oldestStream: Duration?
      /// `serving`, `awaitingBarrier`, `finalGoAwaySent` or `closing`.
      public var drainPhase: String
    }
    /// The server's lifecycle phase (``Server/Phase``).
    public var phase: String
    /// Every open connection, oldest first.
    public var connections: [ConnectionProgress]
    /// Calls still open on every connection.
    public var openStreams: Int { connections.reduce(0) { $0 + $1.openStreams } }
  }

  /// A snapshot of what a stop still waits for (also served as `/drainz`).
  public var progress: Progress {
    let (phase, entries) = state.withLock { s in
      ("\(s.lifecycle.state)", s.connections.values.sorted { $0.id < $1.id })
    }
    let now = MonotonicClock.now()
    return Progress(
      phase: phase,
      connections: entries.map { entry in
        let starts = entry.connection.openCalls.map(\.openedAt)
        return .init(
          peer: entry.connection.peer, openStreams: starts.count,
          oldestStream: starts.min().map { .nanoseconds(now &- min($0, now)) },
          drainPhase: entry.manager.phase.description)
      })
  }

  /// Open connections, and the calls open on them: each connection counts its own calls, read
  /// after the server's lock is released.
  var openConnectionsAndCalls: (connections: Int, calls: Int) {
    let connections = state.withLock { s in s.connections.values.map(\.connection) }
    return (connections.count, connections.reduce(0) { $0 + $1.activeCallCount })
  }
}
