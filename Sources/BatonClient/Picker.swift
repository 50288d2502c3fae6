/// Chooses the connection for a new call among the ready ones.
///
/// A pure value over a snapshot of candidates, so that each policy is tested without sockets.
struct Picker {
  /// One ready connection a call could go to.
  struct Candidate {
    /// Identifies the connection (to avoid the one a retried call just failed on).
    let key: ObjectIdentifier
    /// Calls running on it now.
    let load: Int
    /// The most calls it takes at once (the server's MAX_CONCURRENT_STREAMS).
    let capacity: Int

    var hasRoom: Bool { load < capacity }
  }

  let policy: Client.LoadBalancing
  private var cursor = 0
  private var random: SplitMix

  /// `seed` makes the random choices repeatable (tests); nil seeds from the system.
  init(policy: Client.LoadBalancing, seed: UInt64? = nil) {
    self.policy = policy
    self.random = SplitMix(seed: seed ?? UInt64.random(in: .min ... .max))
  }

  /// The index of the chosen candidate, or nil when none has room. The one with key `avoiding`
  /// is chosen only if no other has room: a retried call goes elsewhere when it can.
  mutating func pick(_ candidates: [Candidate], avoiding: ObjectIdentifier?) -> Int? {
    switch policy {
    case .roundRobin: pickRoundRobin(candidates, avoiding: avoiding)
    case .leastLoaded: pickTwoChoices(candidates, avoiding: avoiding)
    }
  }

  /// The next candidate with room after the last one chosen.
  private mutating func pickRoundRobin(_ candidates: [Candidate], avoiding: ObjectIdentifier?) -> Int? {
    let count = candidates.count
    var fallback: Int?
    for step in 0..<count {
      let index = (cursor + step) % count
      guard candidates[index].hasRoom else { continue }
      if candidates[index].key == avoiding {
        fallback = fallback ?? index
        continue
      }
      cursor = (index + 1) % count
      return index
    }
    return fallback
  }

  /// Power of two random choices: of two distinct candidates with room, the one with fewer
  /// calls. A connection whose calls stopped completing keeps its load and so stops winning,
  /// without any timer: the client steers away from a frozen server before keepalive notices.
  private mutating func pickTwoChoices(_ candidates: [Candidate], avoiding: ObjectIdentifier?) -> Int? {
    var eligible: [Int] = []
    eligible.reserveCapacity(candidates.count)
    var fallback: Int?
    for index in candidates.indices where candidates[index].hasRoom {
      if candidates[index].key == avoiding {
        fallback = index
      } else {
        eligible.append(index)
      }
    }
    switch eligible.count {
    case 0:
      return fallback
    case 1:
      return eligible[0]
    default:
      let first = Int.random(in: 0..<eligible.count, using: &random)
      var second = Int.random(in: 0..<(eligible.count - 1), using: &random)
      if second >= first { second += 1 }
      let (a, b) = (eligible[first], eligible[second])
      return candidates[b].load < candidates[a].load ? b : a
    }
  }
}

/// A small, fast, seedable generator (SplitMix64): the picker draws two numbers per call and
/// needs no cryptographic quality, only repeatability in tests.
struct SplitMix: RandomNumberGenerator {
  private var state: UInt64

  init(seed: UInt64) { state = seed }

  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
