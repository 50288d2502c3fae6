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
  /// Upper bounds of the handling-time buckets, in nanoseconds (0.5 ms ... 10 s).
  static let handlingBounds: [UInt64] = [
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000, 100_000_000, 250_000_000,
    500_000_000, 1_000_000_000, 2_500_000_000, 5_000_000_000, 10_000_000_000,
  ]
  /// Upper bounds of the connection-drain buckets, in nanoseconds (1 ms ... 5 min).
  static let drainBounds: [UInt64] = [
    1_000_000, 10_000_000, 100_000_000, 1_000_000_000, 5_000_000_000, 30_000_000_000, 60_000_000_000,
    300_000_000_000,
  ]

  /// One method's counts.
  final class MethodSlot: Sendable {
    let name: String
    let started = Counter()
    /// By wire status, 0 (OK) ... 16.
    let handled = (0...16).map { _ in Counter() }
    let handling = Histogram(bounds: ServerMetrics.handlingBounds)
    init(name: String) { self.name = name }
  }

  final class Counter: Sendable {
    let value = Atomic<Int>(0)
    @inline(__always) func add(_ amount: Int = 1) { value.add(amount, ordering: .relaxed) }
    var load: Int { value.load(ordering: .relaxed) }
  }

  /// Bucket counts are kept per bucket (not cumulative), so one observation is one add; the
  /// page sums them, and takes the count from the same sum, so `+Inf` always equals `_count`.
  final class Histogram: Sendable {
    let bounds: [UInt64]
    let buckets: [Counter]
    let sumNanoseconds = Counter()

    init(bounds: [UInt64]) {
      self.bounds = bounds
      self.buckets = (0...bounds.count).map { _ in Counter() }
    }

    func observe(nanoseconds: UInt64) {
      var index = 0
      while index < bounds.count && nanoseconds > bounds[index] { index += 1 }
      buckets[index].add()
      sumNanoseconds.add(Int(clamping: nanoseconds))
    }
  }

  /// Slot per registered method, in the router's registration order, then `unknown`.
  let methods: [MethodSlot]
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
    self.unknown = MethodSlot(name: Self.unknownMethod)
  }

  func slot(_ index: Int?) -> MethodSlot {
    guard let index, index < methods.count else { return unknown }
    return methods[index]
  }

  /// The status names used as the `code` label: `ok`, then ``RPCError/Code``'s names.
  static let codeNames: [String] = (0...16).map { status in
    RPCError.Code(wireStatus: UInt8(status))?.description ?? "ok"
  }

  // MARK: - The page

  /// Gauges read from the server at scrape time.
  struct Gauges {
    var openConnections: Int
    var openStreams: Int
  }

  /// The page in the Prometheus text exposition format, version 0.0.4.
  func render(_ gauges: Gauges) -> String {
    var page = PrometheusPage()
    let all = methods + [unknown]
    page.family("baton_server_calls_started_total", "counter", "Calls the server accepted, by method.")
    for slot in all { page.sample("baton_server_calls_started_total", [("method", slot.name)], slot.started.load) }
    page.family(
      "baton_server_calls_handled_total", "counter", "Calls that ended, by method and status code.")
    for slot in all {
      for (status, counter) in slot.handled.enumerated() {
        let count = counter.load
        // Codes never seen are left out (there are 17 per method); OK is always shown.
        guard count > 0 || status == 0 else { continue }
        page.sample(
          "baton_server_calls_handled_total", [("method", slot.name), ("code", Self.codeNames[status])], count)
      }
    }
    page.family(
      "baton_server_handling_seconds", "histogram", "Time from a call's OPEN to its handler's end, by method.")
    for slot in all { page.histogram("baton_server_handling_seconds", [("method", slot.name)], slot.handling) }
    page.family("baton_server_open_connections", "gauge", "Connections open now.")
    page.sample("baton_server_open_connections", [], gauges.openConnections)
    page.family("baton_server_open_streams", "gauge", "Calls running now.")
    page.sample("baton_server_open_streams", [], gauges.openStreams)
    page.family("baton_server_connections_accepted_total", "counter", "Connections accepted (refused ones included).")
    page.sample("baton_server_connections_accepted_total", [], connectionsAccepted.load)
    page.family(
      "baton_server_goaways_sent_total", "counter", "GOAWAY frames sent to drain, refuse or close connections.")
    page.sample("baton_server_goaways_sent_total", [], goAwaysSent.load)
    page.family("baton_server_goaways_received_total", "counter", "GOAWAY frames received from clients.")
    page.sample("baton_server_goaways_received_total", [], goAwaysReceived.load)
    page.family(
      "baton_server_connection_drain_seconds", "histogram",
      "Connection drains (server stop, max age, idle): from the first GOAWAY to the connection's close.")
    page.histogram("baton_server_connection_drain_seconds", [], connectionDrains)
    page.family(
      "baton_server_streams_cut_total", "counter",
      "Calls ended by the server before their handler finished: at the call's own deadline, or by a stop.")
    page.sample("baton_server_streams_cut_total", [("reason", "call_deadline")], streamsCutAtCallDeadline.load)
    page.sample("baton_server_streams_cut_total", [("reason", "stop")], streamsCutByStop.load)
    page.family("baton_server_received_bytes_total", "counter", "Bytes read from client connections.")
    page.sample("baton_server_received_bytes_total", [], traffic.received.load(ordering: .relaxed))
    page.family("baton_server_sent_bytes_total", "counter", "Bytes written to client connections.")
    page.sample("baton_server_sent_bytes_total", [], traffic.sent.load(ordering: .relaxed))
    return page.text
  }
}

/// Writes the text exposition format: HELP and TYPE once per family, label values escaped.
struct PrometheusPage {
  private(set) var text = ""

  mutating func family(_ name: String, _ type: String, _ help: String) {
    text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(type)\n"
  }

  mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Int) {
    text += name + Self.labels(labels) + " \(value)\n"
  }

  mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
    text += name + Self.labels(labels) + " \(value)\n"
  }

  mutating func histogram(_ name: String, _ labels: [(String, String)], _ histogram: ServerMetrics.Histogram) {
    var cumulative = 0
    for (index, bound) in histogram.bounds.enumerated() {
      cumulative += histogram.buckets[index].load
      sample(name + "_bucket", labels + [("le", "\(Double(bound) / 1e9)")], cumulative)
    }
    cumulative += histogram.buckets[histogram.bounds.count].load
    sample(name + "_bucket", labels + [("le", "+Inf")], cumulative)
    sample(name + "_sum", labels, Double(histogram.sumNanoseconds.load) / 1e9)
    sample(name + "_count", labels, cumulative)
  }

  static func labels(_ labels: [(String, String)]) -> String {
    guard !labels.isEmpty else { return "" }
    return "{" + labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
  }

  /// A label value: backslash, double quote and line feed escaped (the format's three escapes).
  static func escapeLabel(_ value: String) -> String {
    var out = ""
    for character in value.unicodeScalars {
      switch character {
      case "\\": out += "\\\\"
      case "\"": out += "\\\""
      case "\n": out += "\\n"
      default: out.unicodeScalars.append(character)
      }
    }
    return out
  }

  /// HELP text: backslash and line feed escaped.
  static func escapeHelp(_ value: String) -> String {
    var out = ""
    for character in value.unicodeScalars {
      switch character {
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      default: out.unicodeScalars.append(character)
      }
    }
    return out
  }
}
