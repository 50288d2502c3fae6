import BatonCore
import BatonPosix

/// The ids `demo.Echo/Ledger` recorded, in arrival order: lets a restart test check which calls
/// a server processed.
public final class Ledger: Sendable {
  private let ids = Locked<[String]>([])

  public init() {}

  /// Appends one id.
  public func record(_ id: String) { ids.withLock { $0.append(id) } }

  /// Every id recorded so far, in order.
  public var entries: [String] { ids.withLock { $0 } }
}
