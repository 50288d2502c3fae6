import BatonClient
import BatonPosix
import BatonTesting

/// Something that happens once, to await (instead of sleeping until it probably has).
final class Event: Sendable {
  private let state = Locked<(fired: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

  func fire() {
    let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
      guard !state.fired else { return [] }
      state.fired = true
      defer { state.waiters = [] }
      return state.waiters
    }
    for waiter in waiters { waiter.resume() }
  }

  var isFired: Bool { state.withLock { $0.fired } }

  func wait() async {
    await withCheckedContinuation { continuation in
      let now = state.withLock { state -> Bool in
        if state.fired { return true }
        state.waiters.append(continuation)
        return false
      }
      if now { continuation.resume() }
    }
  }
}

extension Array where Element == UInt8 {
  init(_ text: String) { self = Array(text.utf8) }
  var text: String { String(decoding: self, as: UTF8.self) }
}

/// The routers of these tests: each handler records into `ledger` which member processed what.
enum Service {
  /// `test/Echo` (unary: records the request as its id, echoes it) and `test/Chat`
  /// (bidirectional: the first message is the id; echoes every message).
  static func router(_ ledger: CallLedger, member: String = "") -> Router {
    var router = Router()
    router.unary("test/Echo") { request, _ in
      ledger.processed(request.text, by: member, reply: request.text)
      return request
    }
    router.bidirectional("test/Chat") { requests, writer, _ in
      var id: String?
      for try await message in requests {
        if id == nil {
          id = message.text
          ledger.processed(message.text, by: member)
        }
        try await writer.write(message)
      }
    }
    return router
  }
}

/// Waits (checking every few ms) until `condition` holds, for states that announce themselves
/// with no event to await (a client noticing that a connection closed). Throws if it does not
/// hold within `timeout`.
func until(_ what: String, timeout: Duration = .seconds(30), _ condition: () -> Bool) async throws {
  struct NotReached: Error, CustomStringConvertible { var description: String }
  let limit = ContinuousClock.now + timeout
  while !condition() {
    guard ContinuousClock.now < limit else { throw NotReached(description: "timed out waiting until \(what)") }
    try await Task.sleep(for: .milliseconds(5))
  }
}
