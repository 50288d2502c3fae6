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
    let (connections, streams) = state.withLock { s in
      (s.connections.count, s.connections.values.reduce(0) { $0 + $1.served.calls.withLock { $0.count } })
    }
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
    let now = MonotonicClock.now()
    return state.withLock { s in
      Progress(
        phase: "\(s.lifecycle.state)",
        connections: s.connections.values.sorted { $0.served.id < $1.served.id }.map { entry in
          let starts = entry.served.calls.withLock { table in table.keysArray.compactMap { table[$0]?.startedAt } }
          return .init(
            peer: entry.served.peer, openStreams: starts.count,
            oldestStream: starts.min().map { .nanoseconds(now &- $0) }, drainPhase: entry.manager.phase.description)
        })
    }
  }
}
