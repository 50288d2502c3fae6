import Testing

@testable import BatonClient

@Suite("The client's metric slots and the page writer, as values")
struct ClientMetricsValueTests {
  @Test("a method keeps its slot; the first 100 names get one each, later names share `other`")
  func methodSlots() {
    let metrics = ClientMetrics(labels: [])
    let slots = (0..<150).map { metrics.slot(for: "svc/M\($0)") }
    #expect(slots[..<100].allSatisfy { $0 !== metrics.other })
    #expect(Set(slots[..<100].map(ObjectIdentifier.init)).count == 100)
    #expect(slots[100...].allSatisfy { $0 === metrics.other })
    for (index, slot) in slots[..<100].enumerated() {
      #expect(slot.name == "svc/M\(index)")
      #expect(metrics.slot(for: "svc/M\(index)") === slot)
    }
  }

  @Test("a call counts into its method's slot, and a name past the first 100 into `other`")
  func countsForMethod() {
    let metrics = ClientMetrics(labels: [])
    for index in 0..<120 { metrics.counts(for: "svc/C\(index)").callStarted() }
    metrics.counts(for: "svc/C7").callStarted()
    #expect(metrics.slot(for: "svc/C7").started == 2)
    #expect(metrics.slot(for: "svc/C0").started == 1)
    #expect(metrics.slot(for: "svc/C99").started == 1)
    #expect(metrics.other.started == 20)
  }

  @Test("many tasks naming 300 methods at once hand out exactly 100 slots, each name always the same one")
  func methodSlotsConcurrently() async {
    let metrics = ClientMetrics(labels: [])
    let names = (0..<300).map { "svc/Concurrent\($0)" }
    // Each task resolves every name twice, in its own order.
    let seen = await withTaskGroup(of: [(String, ObjectIdentifier)].self) { group in
      for _ in 0..<8 {
        group.addTask {
          (names + names).shuffled().map { ($0, ObjectIdentifier(metrics.slot(for: $0))) }
        }
      }
      var all: [(String, ObjectIdentifier)] = []
      for await mine in group { all += mine }
      return all
    }
    // A name is never both `other` and its own, nor two slots of its own (two series with one
    // label set): the first 100 names to arrive get a slot, for good.
    var byName: [String: ObjectIdentifier] = [:]
    for (name, slot) in seen {
      if let earlier = byName[name], earlier != slot { Issue.record("\(name) got two slots") }
      byName[name] = slot
    }
    let other = ObjectIdentifier(metrics.other)
    #expect(Set(byName.values.filter { $0 != other }).count == ClientMetrics.maxMethods)
    #expect(byName.values.filter { $0 == other }.count == names.count - ClientMetrics.maxMethods)
  }

  @Test("constant labels: sorted, and names that are not label names or are the page's own are left out")
  func constantLabels() {
    let (valid, dropped) = ClientMetrics.constantLabels([
      "zone": "a", "client": "inventory", "method": "x", "9lives": "y", "__name__": "z", "with-dash": "w",
    ])
    #expect(valid.map(\.0) == ["client", "zone"])
    #expect(valid.map(\.1) == ["inventory", "a"])
    #expect(Set(dropped) == ["method", "9lives", "__name__", "with-dash"])
  }

  @Test("a family declared again continues its group; HELP and label values are escaped")
  func pageMergesFamilies() {
    var page = PrometheusPage()
    page.family("a_total", type: "counter", help: "A.\nSecond line \\ backslash.")
    page.sample("a_total", labels: [("source", "one")], value: 1)
    page.family("b", type: "gauge", help: "B.")
    page.sample("b", value: 2.5)
    page.family("a_total", type: "counter", help: "Ignored: the first declaration stands.")
    page.sample("a_total", labels: [("source", "t\"w\\o\n")], value: 3)
    #expect(
      page.text == """
        # HELP a_total A.\\nSecond line \\\\ backslash.
        # TYPE a_total counter
        a_total{source="one"} 1
        a_total{source="t\\"w\\\\o\\n"} 3
        # HELP b B.
        # TYPE b gauge
        b 2.5

        """)
  }
}
