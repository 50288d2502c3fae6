import BatonCore

/// One worker's counts, merged with the others' at the end (no lock per call).
struct Tally: Sendable {
  /// Calls (unary calls, or whole streams) that ended OK.
  var ok = 0
  /// Stream messages echoed (stream workers only).
  var messages = 0
  /// Failed calls by status code name.
  var failures: [String: Int] = [:]
  /// Watch streams (numbered sequences): numbers that never arrived, and numbers that arrived
  /// again. Both must stay 0 through any restart.
  var gaps = 0
  var duplicates = 0
  /// Latency of calls (unary) or message round trips (streams) outside any restart window.
  var latency = LatencyHistogram()
  /// Latency of those that overlapped a restart window.
  var restartLatency = LatencyHistogram()

  var failed: Int { failures.values.reduce(0, +) }

  mutating func fail(_ key: String) { failures[key, default: 0] += 1 }

  mutating func merge(_ other: Tally) {
    ok += other.ok
    messages += other.messages
    gaps += other.gaps
    duplicates += other.duplicates
    failures.merge(other.failures, uniquingKeysWith: +)
    latency.merge(other.latency)
    restartLatency.merge(other.restartLatency)
  }

  /// Both histograms together.
  var allLatency: LatencyHistogram {
    var all = latency
    all.merge(restartLatency)
    return all
  }
}
