/// The client-wide allowance for retries that are not free: idempotent calls retried after a
/// lost connection, which the server may already have processed. At most `ratio` of the calls
/// of the last `window`, plus `minimumPerSecond` (Finagle's budget), so that a failing fleet
/// does not get a retry storm on top of its load. Retries of calls the server provably did not
/// process are free: they cost the server nothing, and stay bounded by each call's deadline.
///
/// A value, driven with explicit times, so that it is tested without clocks.
struct RetryThrottle {
  let configuration: Client.RetryBudget
  /// Calls and costly retries per one-second slot of the window, oldest first.
  private var slots: [(second: UInt64, calls: Int, retries: Int)] = []

  init(_ configuration: Client.RetryBudget) { self.configuration = configuration }

  private var windowSeconds: UInt64 { max(1, UInt64(configuration.window.nanoseconds / 1_000_000_000)) }

  private mutating func slot(_ now: UInt64) -> Int {
    let second = now / 1_000_000_000
    let oldest = second >= windowSeconds ? second - windowSeconds + 1 : 0
    if let first = slots.first, first.second < oldest { slots.removeAll { $0.second < oldest } }
    if let last = slots.last, last.second == second { return slots.count - 1 }
    slots.append((second, 0, 0))
    return slots.count - 1
  }

  /// A call started.
  mutating func recordCall(now: UInt64) {
    slots[slot(now)].calls += 1
  }

  /// Takes one retry from the budget; false when it is spent (the call fails instead).
  mutating func tryRetry(now: UInt64) -> Bool {
    let current = slot(now)
    let calls = slots.reduce(0) { $0 + $1.calls }
    let retries = slots.reduce(0) { $0 + $1.retries }
    let allowed = configuration.ratio * Double(calls) + configuration.minimumPerSecond * Double(windowSeconds)
    guard Double(retries) + 1 <= allowed else { return false }
    slots[current].retries += 1
    return true
  }
}
