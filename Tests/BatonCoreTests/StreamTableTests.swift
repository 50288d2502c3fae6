import BatonCore
import Testing

@Suite("StreamTable")
struct StreamTableTests {
  @Test(
    "insert, read (copied and borrowed), change in place and remove agree with Dictionary over random operations",
    arguments: [1, 2, 3, 4])
  func matchesDictionary(seed: UInt64) {
    var random = SplitMix(state: seed)
    var table = StreamTable<[Int]>()
    var reference: [UInt32: [Int]] = [:]
    // Few distinct keys (so that removals hit) and some of them 0, the connection's id.
    let keyRange: ClosedRange<UInt32> = seed.isMultiple(of: 2) ? 0...64 : 0...5_000
    for step in 0..<20_000 {
      let key = UInt32.random(in: keyRange, using: &random)
      switch Int.random(in: 0..<5, using: &random) {
      case 0, 1:
        table[key] = [step]
        reference[key] = [step]
      case 2:
        table[key]?.append(step)
        reference[key]?.append(step)
      case 3:
        #expect(table.removeValue(forKey: key) == reference.removeValue(forKey: key))
      default:
        let updated = table.update(key) { value -> Int in
          value.append(-step)
          return value.count
        }
        reference[key]?.append(-step)
        #expect(updated == reference[key]?.count)
      }
      #expect(table[key] == reference[key])
      #expect(table.withValue(key) { $0 } == reference[key])
      #expect(table.count == reference.count)
    }
    for (key, value) in reference { #expect(table[key] == value) }
    #expect(table.keysArray.sorted() == reference.keys.sorted())
  }

  @Test("consecutive odd ids, as a client opens them, stay reachable through growth and removal")
  func consecutiveIDs() {
    var table = StreamTable<UInt32>()
    for id in stride(from: UInt32(1), through: 20_001, by: 2) { table[id] = id &* 3 }
    #expect(table.count == 10_001)
    for id in stride(from: UInt32(1), through: 20_001, by: 4) { table[id] = nil }
    #expect(table.count == 5_000)
    for id in stride(from: UInt32(1), through: 20_001, by: 2) {
      #expect(table[id] == (id % 4 == 1 ? nil : id &* 3))
    }
  }

  @Test("removeAll empties the table")
  func removeAll() {
    var table = StreamTable<[UInt8]>()
    table[7] = [1, 2, 3]
    table[0] = []
    #expect(table.count == 2)
    table.removeAll()
    #expect(table.isEmpty)
    #expect(table[7] == nil)
    #expect(table.update(7) { _ in true } == nil)
  }
}
