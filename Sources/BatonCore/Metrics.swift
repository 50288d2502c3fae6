package import Synchronization

/// Something with series for a Prometheus page: a ``Client`` (BatonClient), or your own
/// counters.
///
/// A service that both serves and calls wants one scrape target. Give a server the sources to
/// include (`Server.Configuration.metricsSources`) and its `GET /metrics` (and
/// `Server.metricsPage`) carries their series after its own, on the same page.
///
/// What an implementation may rely on, and must do:
/// - `writeMetrics(into:)` is called once per scrape, on whatever thread serves the scrape,
///   possibly at the same time as calls run: read your counters, do not block.
/// - Declare each family with ``PrometheusPage/family(_:type:help:)`` before its samples.
///   Families with the same name from several sources are merged into one group (the first
///   declaration's HELP and TYPE stand), so two sources may share a family as long as their
///   label sets differ (two clients: give each a `metricsLabels` of its own).
/// - Names and label names must match Prometheus' grammar; label values may be anything (the
///   page escapes them).
public protocol MetricsExposition: Sendable {
  /// Appends this source's families and samples to `page`.
  func writeMetrics(into page: inout PrometheusPage)
}

/// A page in the Prometheus text exposition format 0.0.4, written family by family.
///
/// HELP and TYPE come once per family, first; every sample of a family is in one group, in
/// the order written, even when the family is declared again later (by another
/// ``MetricsExposition`` source); label values are escaped (backslash, double quote, line
/// feed), HELP text too (backslash, line feed).
public struct PrometheusPage: Sendable {
  private struct Group: Sendable {
    var header: String
    var lines: String
  }

  private var groups: [Group] = []
  private var groupIndex: [String: Int] = [:]
  /// The group that receives samples: the family declared (or continued) last.
  private var current: Int?

  /// An empty page.
  public init() {}

  /// The page so far, ready to serve (`text/plain; version=0.0.4`).
  public var text: String {
    var text = ""
    for group in groups {
      text += group.header
      text += group.lines
    }
    return text
  }

  /// Starts family `name` (`counter`, `gauge`, `histogram`, `summary` or `untyped`), or, if the
  /// page has it already, continues it: the samples that follow join its group.
  public mutating func family(_ name: String, type: String, help: String) {
    if let index = groupIndex[name] {
      current = index
      return
    }
    groupIndex[name] = groups.count
    current = groups.count
    groups.append(
      Group(header: "# HELP \(name) \(Self.escape(help, quotes: false))\n# TYPE \(name) \(type)\n", lines: ""))
  }

  /// One sample of the family declared last.
  public mutating func sample(_ name: String, labels: [(String, String)] = [], value: Int) {
    append(name + Self.labels(labels) + " \(value)\n", name)
  }

  /// One sample of the family declared last.
  public mutating func sample(_ name: String, labels: [(String, String)] = [], value: Double) {
    append(name + Self.labels(labels) + " \(value)\n", name)
  }

  private mutating func append(_ line: String, _ name: String) {
    if current == nil {
      // A sample before any family: an untyped family of its own.
      groupIndex[name] = groups.count
      current = groups.count
      groups.append(Group(header: "", lines: ""))
    }
    if let current { groups[current].lines += line }
  }

  /// A histogram's `_bucket` (cumulative, seconds), `_sum` and `_count` samples.
  package mutating func histogram(_ name: String, _ labels: [(String, String)], _ histogram: HistogramCounts) {
    var cumulative = 0
    for (index, bound) in histogram.bounds.enumerated() {
      cumulative += histogram.buckets[index]
      sample(name + "_bucket", labels: labels + [("le", "\(Double(bound) / 1e9)")], value: cumulative)
    }
    cumulative += histogram.buckets[histogram.bounds.count]
    sample(name + "_bucket", labels: labels + [("le", "+Inf")], value: cumulative)
    sample(name + "_sum", labels: labels, value: Double(histogram.sumNanoseconds) / 1e9)
    sample(name + "_count", labels: labels, value: cumulative)
  }

  package static func labels(_ labels: [(String, String)]) -> String {
    guard !labels.isEmpty else { return "" }
    return "{" + labels.map { "\($0.0)=\"\(escape($0.1, quotes: true))\"" }.joined(separator: ",") + "}"
  }

  /// Backslash and line feed escaped, and with `quotes` the double quote: a label value takes
  /// all three of the format's escapes, HELP text the first two.
  package static func escape(_ value: String, quotes: Bool) -> String {
    var out = ""
    for character in value.unicodeScalars {
      switch character {
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\"" where quotes: out += "\\\""
      default: out.unicodeScalars.append(character)
      }
    }
    return out
  }

  /// The `code` label of a wire status: `ok`, then ``RPCError/Code``'s names (index 0 ... 16).
  package static let codeNames: [String] = (0...16).map { status in
    RPCError.Code(wireStatus: UInt8(status))?.description ?? "ok"
  }
}

/// One method's counts, on either side: calls started, calls ended by status, and a histogram
/// of their durations (a server's handling time, a client's whole call).
///
/// The counts live in one block of atomics that ``counts`` points at, so that counting a call
/// touches no reference count: a call's path adds to them through that plain value.
package final class MethodMetrics: Sendable {
  package let name: String
  /// Valid as long as this object lives.
  package let counts: MethodCounts

  package init(name: String) {
    self.name = name
    let cells = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: MethodCounts.cellCount)
    for index in 0..<MethodCounts.cellCount { (cells + index).initialize(to: Atomic(0)) }
    self.counts = MethodCounts(cells: cells)
  }

  deinit {
    counts.cells.deinitialize(count: MethodCounts.cellCount)
    counts.cells.deallocate()
  }

  package var started: Int { counts.load(MethodCounts.startedCell) }
  /// Calls ended with wire status `status` (0 ... 16).
  package func handled(_ status: Int) -> Int { counts.load(MethodCounts.handledCell + status) }
  /// The duration histogram, read now.
  package var duration: HistogramCounts {
    HistogramCounts(
      bounds: MetricHistogram.callBounds,
      buckets: (0...MetricHistogram.callBounds.count).map { counts.load(MethodCounts.bucketCell + $0) },
      sumNanoseconds: counts.load(MethodCounts.sumCell))
  }
}

/// Where a call adds to its method's counts: a plain pointer (copying it retains nothing), valid
/// while the ``MethodMetrics`` that made it lives.
package struct MethodCounts: @unchecked Sendable {
  // started | handled by status 0...16 | duration buckets (one per bound, then +Inf) | sum (ns)
  @inlinable static var startedCell: Int { 0 }
  @inlinable static var handledCell: Int { 1 }
  @inlinable static var bucketCell: Int { 18 }
  @inlinable static var sumCell: Int { bucketCell + MetricHistogram.callBoundsCount + 1 }
  static var cellCount: Int { sumCell + 1 }

  @usableFromInline let cells: UnsafeMutablePointer<Atomic<Int>>

  init(cells: UnsafeMutablePointer<Atomic<Int>>) { self.cells = cells }

  /// A call started.
  @inlinable package func callStarted() {
    cells[Self.startedCell].add(1, ordering: .relaxed)
  }

  /// A call ended with wire status `status` (above 16 counts as 16) after `nanoseconds`.
  @inlinable package func callEnded(status: UInt8, nanoseconds: UInt64) {
    cells[Self.handledCell + Int(min(status, 16))].add(1, ordering: .relaxed)
    cells[Self.bucketCell + MetricHistogram.callBucket(nanoseconds)].add(1, ordering: .relaxed)
    cells[Self.sumCell].add(Int(clamping: nanoseconds), ordering: .relaxed)
  }

  func load(_ cell: Int) -> Int { cells[cell].load(ordering: .relaxed) }
}

/// A histogram's counts as read for a page: per-bucket (not cumulative) counts, one per bound
/// and then the `+Inf` one, and the sum of the observations in nanoseconds.
package struct HistogramCounts: Sendable {
  package var bounds: [UInt64]
  package var buckets: [Int]
  package var sumNanoseconds: Int
}

/// A counter: one relaxed atomic add per event, read at scrape time.
package final class MetricCounter: Sendable {
  @usableFromInline package let value = Atomic<Int>(0)
  package init() {}
  /// Inlinable: the per-call path in other modules pays the add itself, not a call.
  @inlinable package func add() { value.add(1, ordering: .relaxed) }
  @inlinable package func add(_ amount: Int) { value.add(amount, ordering: .relaxed) }
  package var load: Int { value.load(ordering: .relaxed) }
}

/// A histogram of durations. Bucket counts are kept per bucket (not cumulative), so one
/// observation is two adds (its bucket, the sum); the page sums them, and takes the count from
/// the same sum, so `+Inf` always equals `_count`.
package final class MetricHistogram: Sendable {
  /// Upper bounds, in nanoseconds, ascending.
  package let bounds: [UInt64]
  /// One per bound, then the `+Inf` one.
  package let buckets: [MetricCounter]
  package let sumNanoseconds = MetricCounter()

  package init(bounds: [UInt64]) {
    self.bounds = bounds
    self.buckets = (0...bounds.count).map { _ in MetricCounter() }
  }

  package func observe(nanoseconds: UInt64) {
    var index = 0
    while index < bounds.count && nanoseconds > bounds[index] { index += 1 }
    buckets[index].add()
    sumNanoseconds.add(Int(clamping: nanoseconds))
  }

  /// The counts, read now.
  package var counts: HistogramCounts {
    HistogramCounts(bounds: bounds, buckets: buckets.map(\.load), sumNanoseconds: sumNanoseconds.load)
  }

  /// 0.5 ms ... 10 s: a call's handling (server) or duration (client).
  package static let callBounds: [UInt64] = [
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000, 100_000_000, 250_000_000,
    500_000_000, 1_000_000_000, 2_500_000_000, 5_000_000_000, 10_000_000_000,
  ]
  @inlinable static var callBoundsCount: Int { 14 }

  /// The bucket of a call lasting `nanoseconds` among ``callBounds`` (their count for `+Inf`).
  /// Written out as comparisons, since it runs for every call.
  @inlinable package static func callBucket(_ nanoseconds: UInt64) -> Int {
    switch nanoseconds {
    case ...500_000: 0
    case ...1_000_000: 1
    case ...2_500_000: 2
    case ...5_000_000: 3
    case ...10_000_000: 4
    case ...25_000_000: 5
    case ...50_000_000: 6
    case ...100_000_000: 7
    case ...250_000_000: 8
    case ...500_000_000: 9
    case ...1_000_000_000: 10
    case ...2_500_000_000: 11
    case ...5_000_000_000: 12
    case ...10_000_000_000: 13
    default: 14
    }
  }
}
