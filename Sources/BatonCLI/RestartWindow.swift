import BatonCore
import Synchronization

/// Marks the times a server is being restarted, so that calls can be told apart: an epoch that
/// is odd while a window is open, and moves on at every open and close.
final class RestartWindow: Sendable {
  private let epoch = Atomic<UInt64>(0)

  init() {}

  func open() { epoch.add(1, ordering: .releasing) }
  func close() { epoch.add(1, ordering: .releasing) }

  /// Read before a call starts; pass to ``overlaps(since:)`` when it ends.
  var mark: UInt64 { epoch.load(ordering: .acquiring) }

  /// Whether a window was open at `mark`, or opened or closed since.
  func overlaps(since mark: UInt64) -> Bool {
    mark & 1 == 1 || epoch.load(ordering: .acquiring) != mark
  }
}
