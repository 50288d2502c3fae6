import BatonCore
import BatonPosix
import Synchronization

/// A one-way, one-time broadcast: "the server began to drain". Handlers poll it or await it.
final class DrainSignal: Sendable {
  private let fired = Atomic<Bool>(false)
  private let waiters = Locked<[UInt64: CheckedContinuation<Void, Never>]>([:])
  private let nextID = Atomic<UInt64>(0)
  /// Streams a drain ended at a checkpoint, to be resumed elsewhere (PROTOCOL.md 18.3).
  let migrated = Atomic<Int>(0)

  var isFired: Bool { fired.load(ordering: .acquiring) }

  func fire() {
    guard !fired.exchange(true, ordering: .acquiringAndReleasing) else { return }
    let all = waiters.withLock { waiters in
      defer { waiters.removeAll() }
      return Array(waiters.values)
    }
    for waiter in all { waiter.resume() }
  }

  /// Returns once the signal fires, or at once if the calling task is cancelled.
  func wait() async {
    if isFired { return }
    let id = nextID.add(1, ordering: .relaxed).newValue
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let resumeNow = waiters.withLock { waiters in
          if isFired || Task.isCancelled { return true }
          waiters[id] = continuation
          return false
        }
        if resumeNow { continuation.resume() }
      }
    } onCancel: {
      waiters.withLock { $0.removeValue(forKey: id) }?.resume()
    }
  }
}
