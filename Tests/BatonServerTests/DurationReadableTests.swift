import Testing

@testable import BatonServer

/// Lifecycle lines and ``StopReport`` print durations in a unit a person reads at a glance.
@Suite("Duration.readable")
struct DurationReadableTests {
  @Test(
    "each range gets its unit and at most three significant figures",
    arguments: [
      (Duration.zero, "0ns"),
      (.nanoseconds(850), "850ns"),
      (.nanoseconds(91_266), "91µs"),  // Swift's description: 9.1266e-05 seconds
      (.nanoseconds(999_499), "999µs"),
      (.nanoseconds(999_600), "1.0ms"),  // rounding up crosses into the next unit
      (.nanoseconds(12_340_000), "12.3ms"),
      (.milliseconds(212), "212.0ms"),
      (.nanoseconds(999_960_000), "1.00s"),
      (.milliseconds(1_204), "1.20s"),
      (.seconds(30), "30.0s"),
      (.milliseconds(95_040), "95.0s"),
      (.seconds(125), "2m05s"),
      (.seconds(3_600), "60m00s"),
      (.milliseconds(-3), "-3.0ms"),
    ])
  func readable(_ duration: Duration, _ expected: String) {
    #expect(duration.readable == expected)
  }

  @Test("a stop report's summary uses them")
  func stopReport() {
    var report = StopReport()
    report.total = .nanoseconds(91_266)
    report.phases = [.init(name: "draining", duration: .microseconds(12_300))]
    #expect(report.description == "total=91µs drained=0 cut=0 draining=12.3ms")
  }
}
