/// Calls waiting for a connection, in arrival order, bounded by the pool: the first one that a
/// freed slot can serve gets it.
struct WaitQueue<Waiter> {
  private var waiters: [UInt64: Waiter] = [:]
  private var order: [UInt64] = []
  private var head = 0
  private var nextID: UInt64 = 0
  /// Ids cancelled before they parked: their call sees this and does not park.
  private var cancelledEarly: Set<UInt64> = []

  var count: Int { waiters.count }
  var isEmpty: Bool { waiters.isEmpty }

  /// An id for a call about to wait.
  mutating func reserveID() -> UInt64 {
    defer { nextID += 1 }
    return nextID
  }

  /// Whether `id` was cancelled before it parked (consumes the mark).
  mutating func wasCancelledEarly(_ id: UInt64) -> Bool { cancelledEarly.remove(id) != nil }

  mutating func park(_ id: UInt64, _ waiter: Waiter) {
    waiters[id] = waiter
    order.append(id)
  }

  /// Removes a waiter (cancelled, expired); nil if it was not parked, in which case a later
  /// park of that id is refused (see ``wasCancelledEarly(_:)``) when `cancelling`.
  mutating func remove(_ id: UInt64, cancelling: Bool = false) -> Waiter? {
    guard let waiter = waiters.removeValue(forKey: id) else {
      if cancelling { cancelledEarly.insert(id) }
      return nil
    }
    return waiter
  }

  /// Grants waiters in order while `serve` finds each one a slot; stops at the first it cannot
  /// serve (its turn comes first next time).
  mutating func grant<Grant>(_ serve: (Waiter) -> Grant?) -> [(Waiter, Grant)] {
    var granted: [(Waiter, Grant)] = []
    while head < order.count {
      let id = order[head]
      guard let waiter = waiters[id] else {
        head += 1
        continue
      }
      guard let grant = serve(waiter) else { break }
      head += 1
      waiters[id] = nil
      granted.append((waiter, grant))
    }
    compact()
    return granted
  }

  /// Removes and returns every waiter `matching` says.
  mutating func removeAll(where matching: (Waiter) -> Bool) -> [Waiter] {
    var removed: [Waiter] = []
    for (id, waiter) in waiters where matching(waiter) {
      waiters[id] = nil
      removed.append(waiter)
    }
    compact()
    return removed
  }

  private mutating func compact() {
    if waiters.isEmpty {
      order.removeAll(keepingCapacity: true)
      head = 0
    } else if head > 64 && head > order.count / 2 {
      order.removeFirst(head)
      head = 0
    }
    if order.count - head > 64 && order.count - head > 2 * waiters.count {
      order = order[head...].filter { waiters[$0] != nil }
      head = 0
    }
  }
}
