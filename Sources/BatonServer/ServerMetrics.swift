import BatonCore
import BatonPosix
import BatonTransport
import Synchronization

/// The server's counters, served as `GET /metrics` (Prometheus text format 0.0.4).
///
/// Every per-call count is a relaxed atomic add on a slot chosen when the router was built: no
/// lock and no dictionary per call. Methods are the router's, plus one `unknown` slot that every
/// other name shares, so a client sending random method names cannot grow the page.
final class ServerMetrics: Sendable {
  /// The label of methods the router does not have.
  static let unknownMethod = "unknown"
  /// Upper bounds of the connection-drain buckets, in nanoseconds (1 ms ... 5 min).
  static let drainBounds: [UInt64] = [
    1_000_000, 10_000_000, 100_000_000, 1_000_000_000, 5_000_000_000, 30_000_000_000, 60_000_000_000,
    300_000_000_000,
  ]

  typealias MethodSlot = MethodMetrics

  typealias Counter = MetricCounter
  typealias Histogram = MetricHistogram

  /// Slot per registered method, in the router's registration order, then `unknown`.
  let methods: [MethodSlot]
  /// `methods[i].counts`: read per call without touching a reference count.
  private let methodCounts: [MethodCounts]
  let unknown: MethodSlot
  let traffic = TrafficCounters()
  let connectionsAccepted = Counter()
  let goAwaysSent = Counter()
  let goAwaysReceived = Counter()
  let connectionDrains = Histogram(bounds: ServerMetrics.drainBounds)
  let streamsCutAtCallDeadline = Counter()
  let streamsCutByStop = Counter()

  init(methods: [String]) {
    self.methods = methods.map(MethodSlot.init)
    self.methodCounts = self.methods.map(\.counts)
    self.unknown = MethodSlot(name: Self.unknownMethod)
  }

  /// Where a call of the method registered at `index` (nil: unknown) is counted.
  func counts(_ index: Int?) -> MethodCounts {
    guard let index, index < methodCounts.count else { return unknown.counts }
    return methodCounts[index]
  }

  /// The status names used as the `code` label: `ok`, then ``RPCError/Code``'s names.
  static let codeNames = PrometheusPage.codeNames

  // MARK: - The page

  /// Gauges read from the server at scrape time.
  struct Gauges {
    var openConnections: Int
    var openStreams: Int
  }

  /// The server's families, in the Prometheus text exposition format, version 0.0.4.
  func write(_ gauges: Gauges, into page: inout PrometheusPage) {
    let all = methods + [unknown]
    page.family("baton_server_calls_started_total", type: "counter", help: "Calls the server accepted, by method.")
    for slot in all {
      page.sample("baton_server_calls_started_total", labels: [("method", slot.name)], value: slot.started)
    }
    page.family(
      "baton_server_calls_handled_total", type: "counter", help: "Calls that ended, by method and status code.")
    for slot in all {
      for status in 0...16 {
        let count = slot.handled(status)
        // Codes never seen are left out (there are 17 per method); OK is always shown.
        guard count > 0 || status == 0 else { continue }
        page.sample(
          "baton_server_calls_handled_total", labels: [("method", slot.name), ("code", Self.codeNames[status])],
          value: count)
      }
    }
    page.family(
      "baton_server_handling_seconds", type: "histogram",
      help: "Time from a call's OPEN to its handler's end, by method.")
    for slot in all { page.histogram("baton_server_handling_seconds", [("method", slot.name)], slot.duration) }
    page.family("baton_server_open_connections", type: "gauge", help: "Connections open now.")
    page.sample("baton_server_open_connections", labels: [], value: gauges.openConnections)
    page.family("baton_server_open_streams", type: "gauge", help: "Calls running now.")
    page.sample("baton_server_open_streams", labels: [], value: gauges.openStreams)
    page.family(
      "baton_server_connections_accepted_total", type: "counter", help: "Connections accepted (refused ones included).")
    page.sample("baton_server_connections_accepted_total", labels: [], value: connectionsAccepted.load)
    page.family(
      "baton_server_goaways_sent_total", type: "counter",
      help: "GOAWAY frames sent to drain, refuse or close connections.")
    page.sample("baton_server_goaways_sent_total", labels: [], value: goAwaysSent.load)
    page.family("baton_server_goaways_received_total", type: "counter", help: "GOAWAY frames received from clients.")
    page.sample("baton_server_goaways_received_total", labels: [], value: goAwaysReceived.load)
    page.family(
      "baton_server_connection_drain_seconds", type: "histogram",
      help: "Connection drains (server stop, max age, idle): from the first GOAWAY to the connection's close.")
    page.histogram("baton_server_connection_drain_seconds", [], connectionDrains.counts)
    page.family(
      "baton_server_streams_cut_total", type: "counter",
      help: "Calls ended by the server before their handler finished: at the call's own deadline, or by a stop.")
    page.sample(
      "baton_server_streams_cut_total", labels: [("reason", "call_deadline")], value: streamsCutAtCallDeadline.load)
    page.sample("baton_server_streams_cut_total", labels: [("reason", "stop")], value: streamsCutByStop.load)
    page.family("baton_server_received_bytes_total", type: "counter", help: "Bytes read from client connections.")
    page.sample("baton_server_received_bytes_total", labels: [], value: traffic.received.load(ordering: .relaxed))
    page.family("baton_server_sent_bytes_total", type: "counter", help: "Bytes written to client connections.")
    page.sample("baton_server_sent_bytes_total", labels: [], value: traffic.sent.load(ordering: .relaxed))
  }
}
