import CBatonShims
import Glibc

/// The epoll, eventfd and timerfd calls an ``EventLoop`` makes, each wrapped once.
enum Epoll {
  static func create() throws(IOError) -> Int32 {
    try retryingInterrupts("epoll_create1") { baton_epoll_create() }
  }

  static func add(_ epoll: Int32, fd: Int32, events: UInt32, data: UInt64) throws(IOError) {
    _ = try retryingInterrupts("epoll_ctl") {
      baton_epoll_ctl(epoll, BATON_EPOLL_CTL_ADD, fd, events, data)
    }
  }

  static func modify(_ epoll: Int32, fd: Int32, events: UInt32, data: UInt64) throws(IOError) {
    _ = try retryingInterrupts("epoll_ctl") {
      baton_epoll_ctl(epoll, BATON_EPOLL_CTL_MOD, fd, events, data)
    }
  }

  /// Errors are ignored: the fd may already be closed, which removed it from the set.
  static func remove(_ epoll: Int32, fd: Int32) {
    _ = baton_epoll_ctl(epoll, BATON_EPOLL_CTL_DEL, fd, 0, 0)
  }

  /// Waits for events; an interrupted wait reports none (the loop just turns again).
  static func wait(
    _ epoll: Int32,
    into events: UnsafeMutableRawPointer,
    capacity: Int32,
    timeoutMilliseconds: Int32
  ) -> Int {
    let count = baton_epoll_wait(epoll, events, capacity, timeoutMilliseconds)
    // Only EINTR can fail a wait on a valid epoll fd with a valid buffer.
    return count > 0 ? Int(count) : 0
  }

  static func makeEventFD() throws(IOError) -> Int32 {
    try retryingInterrupts("eventfd") { baton_eventfd_create() }
  }

  static func makeTimerFD() throws(IOError) -> Int32 {
    try retryingInterrupts("timerfd_create") { baton_timerfd_create() }
  }

  /// Adds 1 to an eventfd's counter, making it readable. A full counter (EAGAIN) is
  /// already readable, so that failure needs nothing.
  static func signal(_ eventFD: Int32) {
    var one: UInt64 = 1
    while Glibc.write(eventFD, &one, MemoryLayout<UInt64>.size) == -1, errno == EINTR {}
  }

  /// Reads an eventfd's or a timerfd's counter back to zero, so it stops being readable.
  static func drain(_ fd: Int32) {
    var value: UInt64 = 0
    while Glibc.read(fd, &value, MemoryLayout<UInt64>.size) == -1, errno == EINTR {}
  }

  /// Arms `timerFD` to expire once at `deadline` (MonotonicClock nanoseconds).
  /// Returns false if the kernel refused.
  static func arm(_ timerFD: Int32, at deadline: UInt64) -> Bool {
    while baton_timerfd_arm(timerFD, deadline) == -1 {
      if errno != EINTR {
        return false
      }
    }
    return true
  }
}
