import CBatonShims

/// Which readiness events a registration wants. Level-triggered. An empty set still reports
/// hangups.
package struct Interest: OptionSet, Sendable, Hashable {
  package let rawValue: UInt8

  package init(rawValue: UInt8) {
    self.rawValue = rawValue
  }

  /// Call ``IOHandler/readable()`` while the fd has bytes or EOF.
  package static let read = Interest(rawValue: 1 << 0)
  /// Call ``IOHandler/writable()`` while the fd can take bytes.
  package static let write = Interest(rawValue: 1 << 1)

  /// The epoll event mask for this interest.
  var epollEvents: UInt32 {
    var events: UInt32 = 0
    if self.contains(.read) {
      events |= BATON_EPOLLIN
    }
    if self.contains(.write) {
      events |= BATON_EPOLLOUT
    }
    return events
  }
}
