import Testing

@testable import BatonClient

@Suite("The metadata an application may send, as values")
struct MetadataRulesValueTests {
  private func code(_ metadata: Metadata) -> RPCError.Code? {
    do {
      try MetadataRules.check(metadata)
      return nil
    } catch let error as RPCError {
      return error.code
    } catch {
      return .unknown
    }
  }

  @Test("ordinary names pass; reserved, empty, over-long and out-of-set names are invalidArgument")
  func rules() {
    #expect(code([:]) == nil)
    #expect(code(["who": "x", "a-b_c.d9": "", "my-baton-id": "1", "batonx": "1"]) == nil)
    #expect(code(["baton-x": "1"]) == .invalidArgument)
    #expect(code(["BATON-X": "1"]) == .invalidArgument, "names are folded to lower case first")
    #expect(code(["baton-": ""]) == .invalidArgument)
    #expect(code(["": "1"]) == .invalidArgument)
    #expect(code(["a b": "1"]) == .invalidArgument)
    #expect(code(["é": "1"]) == .invalidArgument)
    #expect(code([String(repeating: "a", count: 65_535): ""]) == nil)
    #expect(code([String(repeating: "a", count: 65_536): ""]) == .invalidArgument)
    #expect(code(["v": String(repeating: "x", count: 65_536)]) == .invalidArgument)
  }
}

@Suite("Reconnect backoff, as values")
struct BackoffValueTests {
  @Test("grows by the multiplier from the initial delay, within the jitter, capped at the maximum")
  func delays() {
    let backoff = Client.Backoff(initial: .milliseconds(50), multiplier: 1.6, jitter: 0.2, maximum: .seconds(5))
    for _ in 0..<200 {
      let first = backoff.delay(afterFailures: 1)
      #expect((40_000_000...60_000_000).contains(first))
      let third = backoff.delay(afterFailures: 3)  // 50 ms × 1.6² = 128 ms
      #expect((102_400_000...153_600_000).contains(third))
      let late = backoff.delay(afterFailures: 40)
      #expect((4_000_000_000...6_000_000_000).contains(late))
    }
  }
}
