import BatonCore
import BatonPosix

/// Waiting for async work with a time limit, even work that ignores cancellation.
///
/// A client call waiting for a connection that never comes does not end when its task is
/// cancelled, so a command that must end on time cannot simply await it.
enum Bounded {
  /// Runs `body` in a new task and waits for it until `deadline` (``MonotonicClock`` ns). Then
  /// the task is cancelled and left behind, and the result is nil.
  static func run<Result: Sendable>(
    until deadline: UInt64, _ body: @escaping @Sendable () async -> Result
  ) async -> Result? {
    let once = Once<Result?>()
    let work = Task {
      once.resume(await body())
    }
    let timer = Task {
      await LoadWorkers.sleep(until: deadline)
      if !Task.isCancelled {
        work.cancel()
        once.resume(nil)
      }
    }
    let result = await withCheckedContinuation { once.set($0) }
    timer.cancel()
    return result
  }

  /// Resumes a continuation with the first value offered, whichever racer comes first.
  private final class Once<Value: Sendable>: Sendable {
    private let state = Locked<(continuation: CheckedContinuation<Value, Never>?, value: Value?, done: Bool)>(
      (nil, nil, false))

    func set(_ continuation: CheckedContinuation<Value, Never>) {
      let ready = state.withLock { s -> Value? in
        guard let value = s.value else {
          s.continuation = continuation
          return nil
        }
        return value
      }
      if let ready { continuation.resume(returning: ready) }
    }

    func resume(_ value: Value) {
      let continuation = state.withLock { s -> CheckedContinuation<Value, Never>? in
        guard !s.done else { return nil }
        s.done = true
        guard let continuation = s.continuation else {
          s.value = value
          return nil
        }
        s.continuation = nil
        return continuation
      }
      continuation?.resume(returning: value)
    }
  }
}
