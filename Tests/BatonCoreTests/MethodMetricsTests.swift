import Testing

@testable import BatonCore

@Suite("A method's counts, as values")
struct MethodMetricsTests {
  @Test("a call's duration lands in the bucket its bound says, for every bound and either side of it")
  func durationBuckets() {
    let bounds = MetricHistogram.callBounds
    #expect(bounds.count == MetricHistogram.callBoundsCount)
    #expect(MetricHistogram.callBucket(0) == 0)
    for (index, bound) in bounds.enumerated() {
      // A bound is the bucket's upper edge, inclusive (Prometheus' `le`).
      #expect(MetricHistogram.callBucket(bound - 1) == index)
      #expect(MetricHistogram.callBucket(bound) == index)
      #expect(MetricHistogram.callBucket(bound + 1) == index + 1)
    }
    #expect(MetricHistogram.callBucket(.max) == bounds.count)
  }

  @Test("calls counted through the plain counts read back by status, bucket and sum")
  func countsReadBack() {
    let metrics = MethodMetrics(name: "svc/M")
    let counts = metrics.counts
    for _ in 0..<3 { counts.callStarted() }
    counts.callEnded(status: 0, nanoseconds: 400_000)
    counts.callEnded(status: 14, nanoseconds: 3_000_000)
    counts.callEnded(status: 200, nanoseconds: 20_000_000_000)  // an unknown status counts as 16
    #expect(metrics.started == 3)
    #expect(metrics.handled(0) == 1)
    #expect(metrics.handled(14) == 1)
    #expect(metrics.handled(16) == 1)
    #expect((0...16).map(metrics.handled).reduce(0, +) == 3)
    let duration = metrics.duration
    #expect(duration.bounds == MetricHistogram.callBounds)
    #expect(duration.buckets.count == MetricHistogram.callBounds.count + 1)
    #expect(duration.buckets[0] == 1)
    #expect(duration.buckets[3] == 1)  // 3 ms: above 2.5 ms, up to 5 ms
    #expect(duration.buckets[MetricHistogram.callBounds.count] == 1)  // +Inf
    #expect(duration.sumNanoseconds == 400_000 + 3_000_000 + 20_000_000_000)
  }

  @Test("the page's histogram is cumulative, and its +Inf bucket equals its count")
  func pageHistogram() {
    let metrics = MethodMetrics(name: "svc/M")
    metrics.counts.callEnded(status: 0, nanoseconds: 1)
    metrics.counts.callEnded(status: 0, nanoseconds: 700_000)
    metrics.counts.callEnded(status: 0, nanoseconds: 60_000_000_000)
    var page = PrometheusPage()
    page.family("h", type: "histogram", help: "h")
    page.histogram("h", [], metrics.duration)
    let text = page.text
    #expect(text.contains("h_bucket{le=\"0.0005\"} 1\n"))
    #expect(text.contains("h_bucket{le=\"0.001\"} 2\n"))
    #expect(text.contains("h_bucket{le=\"10.0\"} 2\n"))
    #expect(text.contains("h_bucket{le=\"+Inf\"} 3\n"))
    #expect(text.contains("h_count 3\n"))
  }
}
