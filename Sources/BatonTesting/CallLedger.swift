import BatonPosix

/// What a test's calls did, recorded from both ends, and the checks that say a fault cost
/// nothing: each request id processed at most once, every call concluded (succeeded, or failed
/// with a stated reason), and no reply delivered to a call other than the one it answered.
///
/// Handlers record ``processed(_:by:reply:)``; the calling side records ``started(_:)`` and then
/// ``succeeded(_:reply:)`` or ``failed(_:reason:)`` (or wraps the call in ``call(_:_:)``).
/// ``verify()`` throws the violations, so it works the same under XCTest (`XCTAssertNoThrow`)
/// and Swift Testing (`#expect(throws: Never.self)` or just `try`).
public final class CallLedger: Sendable {
  /// One request id's record.
  public struct Entry: Sendable, Hashable {
    /// Who processed it, once per time (a member's name, or "" when the handler gave none).
    public var processedBy: [String] = []
    /// The replies its handlers produced, when they said.
    public var replies: [String] = []
    /// Whether the caller started it.
    public var started = false
    /// The caller's outcome, once it has one.
    public var outcome: Outcome?
  }

  /// How a call ended for its caller.
  public enum Outcome: Sendable, Hashable {
    /// It returned this reply.
    case succeeded(reply: String)
    /// It failed; the reason says how (a status and message).
    case failed(reason: String)
  }

  /// A broken promise.
  public enum Violation: Sendable, Hashable, CustomStringConvertible {
    /// Processed more than once: a retry ran a call the server had already run.
    case processedMoreThanOnce(id: String, by: [String])
    /// Started, but neither succeeded nor failed.
    case notConcluded(id: String)
    /// Failed with no stated reason.
    case failedWithoutReason(id: String)
    /// Succeeded with a reply its handlers did not produce for it (`expected`), or one produced
    /// for another request.
    case crossedReply(id: String, reply: String, expected: [String])
    /// Succeeded, yet no handler recorded processing it.
    case succeededUnprocessed(id: String)

    /// The violation in a sentence.
    public var description: String {
      switch self {
      case .processedMoreThanOnce(let id, let by):
        "\(id) was processed \(by.count) times (by \(by.map { $0.isEmpty ? "?" : $0 }.joined(separator: ", ")))"
      case .notConcluded(let id): "\(id) was started but neither succeeded nor failed"
      case .failedWithoutReason(let id): "\(id) failed without a stated reason"
      case .crossedReply(let id, let reply, let expected):
        "\(id) got the reply '\(reply)', which is not its own (\(expected.map { "'\($0)'" }.joined(separator: ", ")))"
      case .succeededUnprocessed(let id): "\(id) succeeded, but no handler recorded processing it"
      }
    }
  }

  /// The violations ``verify()`` found.
  public struct Violations: Error, Sendable, CustomStringConvertible {
    /// Every violation found, by request id.
    public var violations: [Violation]
    /// One line per violation.
    public var description: String {
      "call ledger: \(violations.count) violation(s):\n" + violations.map { "  \($0)" }.joined(separator: "\n")
    }
  }

  private let entries = Locked<[String: Entry]>([:])

  /// An empty ledger, shared by a test's handlers and callers.
  public init() {}

  /// A handler processed request `id` (call it once per time the handler runs for it).
  public func processed(_ id: String, by member: String = "", reply: String? = nil) {
    entries.withLock { entries in
      entries[id, default: Entry()].processedBy.append(member)
      if let reply { entries[id, default: Entry()].replies.append(reply) }
    }
  }

  /// The caller starts a call for request `id`.
  public func started(_ id: String) { entries.withLock { $0[id, default: Entry()].started = true } }

  /// The call for `id` succeeded with `reply`.
  public func succeeded(_ id: String, reply: String) { conclude(id, .succeeded(reply: reply)) }

  /// The call for `id` failed, for `reason` (say why: a status and message).
  public func failed(_ id: String, reason: String) { conclude(id, .failed(reason: reason)) }

  /// Runs a call for `id`, recording its start and its outcome (a thrown error's description is
  /// the reason). Returns the outcome rather than throwing, so a test can go on and verify.
  @discardableResult
  public func call(_ id: String, _ body: () async throws -> String) async -> Outcome {
    started(id)
    let outcome: Outcome
    do {
      outcome = .succeeded(reply: try await body())
    } catch {
      outcome = .failed(reason: "\(error)")
    }
    conclude(id, outcome)
    return outcome
  }

  private func conclude(_ id: String, _ outcome: Outcome) {
    entries.withLock { entries in
      entries[id, default: Entry()].started = true
      entries[id, default: Entry()].outcome = outcome
    }
  }

  /// Everything recorded, by request id.
  public var snapshot: [String: Entry] { entries.withLock { $0 } }

  /// How many times `id` was processed.
  public func timesProcessed(_ id: String) -> Int { entries.withLock { $0[id]?.processedBy.count ?? 0 } }

  /// The calls that failed, with their reasons.
  public var failures: [String: String] {
    snapshot.compactMapValues { if case .failed(let reason)? = $0.outcome { reason } else { nil } }
  }

  /// Every violation, by request id.
  public var violations: [Violation] {
    let entries = snapshot
    var producedFor: [String: Set<String>] = [:]
    for (id, entry) in entries { for reply in entry.replies { producedFor[reply, default: []].insert(id) } }
    var found: [Violation] = []
    for id in entries.keys.sorted() {
      guard let entry = entries[id] else { continue }
      if entry.processedBy.count > 1 { found.append(.processedMoreThanOnce(id: id, by: entry.processedBy)) }
      switch entry.outcome {
      case nil:
        if entry.started { found.append(.notConcluded(id: id)) }
      case .failed(let reason)?:
        if reason.allSatisfy(\.isWhitespace) { found.append(.failedWithoutReason(id: id)) }
      case .succeeded(let reply)?:
        if entry.processedBy.isEmpty {
          found.append(.succeededUnprocessed(id: id))
        } else if !entry.replies.isEmpty ? !entry.replies.contains(reply) : producedFor[reply] != nil {
          found.append(.crossedReply(id: id, reply: reply, expected: entry.replies))
        }
      }
    }
    return found
  }

  /// Throws ``Violations`` if any check fails.
  public func verify() throws(Violations) {
    let found = violations
    if !found.isEmpty { throw Violations(violations: found) }
  }
}
