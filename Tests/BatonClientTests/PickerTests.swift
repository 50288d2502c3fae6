import Testing

@testable import BatonClient

private final class Conn {}

@Suite("Picking a connection for a new call (no sockets)")
struct PickerTests {
  private let connections = (0..<4).map { _ in Conn() }

  private func candidates(_ loads: [Int], capacity: Int = 100) -> [Picker.Candidate] {
    loads.indices.map { Picker.Candidate(key: ObjectIdentifier(connections[$0]), load: loads[$0], capacity: capacity) }
  }

  @Test("round-robin takes each connection in turn and skips full ones")
  func roundRobin() {
    var picker = Picker(policy: .roundRobin, seed: 1)
    let three = candidates([0, 0, 0])
    #expect((0..<6).map { _ in picker.pick(three, avoiding: nil) } == [0, 1, 2, 0, 1, 2])
    let middleFull = [
      Picker.Candidate(key: ObjectIdentifier(connections[0]), load: 0, capacity: 1),
      Picker.Candidate(key: ObjectIdentifier(connections[1]), load: 1, capacity: 1),
      Picker.Candidate(key: ObjectIdentifier(connections[2]), load: 0, capacity: 1),
    ]
    var fresh = Picker(policy: .roundRobin, seed: 1)
    #expect((0..<4).map { _ in fresh.pick(middleFull, avoiding: nil) } == [0, 2, 0, 2])
    let r1 = fresh.pick(candidates([100, 100], capacity: 100), avoiding: nil)
    #expect(r1 == nil)
  }

  @Test(
    "the connection a retried call just failed on is chosen only when no other has room",
    arguments: [Client.LoadBalancing.roundRobin, .leastLoaded])
  func avoiding(policy: Client.LoadBalancing) {
    var picker = Picker(policy: policy, seed: 7)
    let avoid = ObjectIdentifier(connections[1])
    for _ in 0..<50 { #expect(picker.pick(candidates([5, 0, 5]), avoiding: avoid) != 1) }
    let othersFull = [
      Picker.Candidate(key: ObjectIdentifier(connections[0]), load: 1, capacity: 1),
      Picker.Candidate(key: avoid, load: 0, capacity: 1),
    ]
    let r2 = picker.pick(othersFull, avoiding: avoid)
    #expect(r2 == 1)
  }

  @Test("least-loaded never picks the busiest of three, and spreads over the rest")
  func twoChoices() {
    var picker = Picker(policy: .leastLoaded, seed: 42)
    var counts = [0, 0, 0]
    for _ in 0..<3_000 {
      guard let index = picker.pick(candidates([2, 9, 2]), avoiding: nil) else {
        Issue.record("no pick")
        return
      }
      counts[index] += 1
    }
    #expect(counts[1] == 0, "of any two, the one with 9 calls always loses")
    #expect(counts[0] > 1_000 && counts[2] > 1_000)
  }

  @Test("least-loaded with the same seed makes the same choices")
  func repeatable() {
    var a = Picker(policy: .leastLoaded, seed: 3)
    var b = Picker(policy: .leastLoaded, seed: 3)
    let loads = candidates([1, 1, 1, 1])
    #expect((0..<100).map { _ in a.pick(loads, avoiding: nil) } == (0..<100).map { _ in b.pick(loads, avoiding: nil) })
  }
}
