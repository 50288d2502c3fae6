import BatonCore
import BatonPosix
import Synchronization

/// When workers stop starting calls: a fixed time, or whenever their driver says.
final class StopTime: Sendable {
  private let at: Atomic<UInt64>

  /// Stops at `deadline` (``MonotonicClock`` nanoseconds); `.max` waits for ``stopNow()``.
  init(at deadline: UInt64 = .max) { self.at = Atomic(deadline) }

  func stopNow() { at.store(MonotonicClock.now(), ordering: .relaxed) }

  /// True once the stop time passed or the task is cancelled.
  var isOver: Bool { Task.isCancelled || MonotonicClock.now() >= at.load(ordering: .relaxed) }
}
