import BatonPosix
import Synchronization

/// A test's way to await an event that happens elsewhere (in a handler, on a loop) without
/// sleeping: `fire()` once, `wait()` any number of times. A wait ends early if its task is
/// cancelled (a suite's time limit), so a test whose event never comes fails instead of hanging.
final class Signal: Sendable {
  private struct State {
    var fired = false
    var nextWaiter = 0
    var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    /// Waits cancelled before they parked.
    var cancelled: Set<Int> = []
  }
  private let state = Locked(State())

  func fire() {
    let waiters = state.withLock { s in
      s.fired = true
      defer { s.waiters.removeAll() }
      return Array(s.waiters.values)
    }
    for waiter in waiters { waiter.resume() }
  }

  var isFired: Bool { state.withLock { $0.fired } }

  func wait() async {
    let id = state.withLock { s in
      s.nextWaiter += 1
      return s.nextWaiter
    }
    await withTaskCancellationHandler {
      await withCheckedContinuation { continuation in
        let now = state.withLock { s in
          if s.fired || s.cancelled.remove(id) != nil { return true }
          s.waiters[id] = continuation
          return false
        }
        if now { continuation.resume() }
      }
    } onCancel: {
      let waiter = state.withLock { s in
        guard let waiter = s.waiters.removeValue(forKey: id) else {
          s.cancelled.insert(id)
          return nil as CheckedContinuation<Void, Never>?
        }
        return waiter
      }
      waiter?.resume()
    }
  }
}

/// Releases everyone once `count` callers have arrived.
final class Barrier: Sendable {
  private let count: Int
  private let state = Locked<(arrived: Int, waiters: [CheckedContinuation<Void, Never>])>((0, []))
  init(count: Int) { self.count = count }

  func arrive() async {
    await withCheckedContinuation { continuation in
      let release = state.withLock { s -> [CheckedContinuation<Void, Never>] in
        s.arrived += 1
        s.waiters.append(continuation)
        guard s.arrived >= count else { return [] }
        defer { s.waiters.removeAll() }
        return s.waiters
      }
      for waiter in release { waiter.resume() }
    }
  }

  var arrived: Int { state.withLock { $0.arrived } }
}

/// Waits (polling every few ms) until `condition` holds, for states that announce themselves
/// with no event to await, such as another process's. Throws (failing the test) if it does not
/// hold within `timeout`: generous, since it only bounds a wait that ends as soon as it can.
func eventually(
  _ what: String, within timeout: Duration = .seconds(30), _ condition: () async -> Bool
) async throws {
  struct NotReached: Error, CustomStringConvertible { var description: String }
  let limit = ContinuousClock.now + timeout
  while await !condition() {
    guard ContinuousClock.now < limit else {
      throw NotReached(description: "timed out after \(timeout) waiting until \(what)")
    }
    try await Task.sleep(for: .milliseconds(5))
  }
}

/// A counter shared between a handler and a test.
final class Counter: Sendable {
  private let value = Atomic<Int>(0)
  @discardableResult func increment() -> Int { value.add(1, ordering: .relaxed).newValue }
  var current: Int { value.load(ordering: .relaxed) }
}

/// A value set once by the test and read by handlers.
final class Box<Value: Sendable>: Sendable {
  private let storage = Locked<Value?>(nil)
  var value: Value? {
    get { storage.withLock { $0 } }
    set { storage.withLock { $0 = newValue } }
  }
}

/// Which request ids each server processed: proves no call ran twice.
final class Ledger: Sendable {
  private let entries = Locked<[String: Int]>([:])
  func record(_ id: String) { entries.withLock { $0[id, default: 0] += 1 } }
  var duplicates: [String] { entries.withLock { $0.filter { $0.value > 1 }.map(\.key) } }
  func count(_ id: String) -> Int { entries.withLock { $0[id, default: 0] } }
  var total: Int { entries.withLock { $0.count } }
  var ids: [String] { entries.withLock { Array($0.keys) } }
}
