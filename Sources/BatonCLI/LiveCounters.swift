import BatonCore
import Synchronization

/// Counts that a progress line reads while the workers run.
final class LiveCounters: Sendable {
  private let okCount = Atomic<Int>(0)
  private let failedCount = Atomic<Int>(0)
  private let messageCount = Atomic<Int>(0)

  init() {}

  func succeeded() { okCount.add(1, ordering: .relaxed) }
  func failed() { failedCount.add(1, ordering: .relaxed) }
  func echoed() { messageCount.add(1, ordering: .relaxed) }

  var ok: Int { okCount.load(ordering: .relaxed) }
  var failures: Int { failedCount.load(ordering: .relaxed) }
  /// Stream messages echoed.
  var messages: Int { messageCount.load(ordering: .relaxed) }
}
