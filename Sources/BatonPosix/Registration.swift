/// A file descriptor's registration with one ``EventLoop``.
///
/// Carries a generation number next to the fd: an event that was queued for an earlier
/// registration of the same fd number (closed, then reused by a new socket) carries the old
/// generation and is dropped instead of reaching the new handler.
package struct Registration: Hashable, Sendable {
  /// The registered file descriptor.
  package let fd: Int32
  let generation: UInt32

  init(fd: Int32, generation: UInt32) {
    self.fd = fd
    self.generation = generation
  }

  /// Generation in the high half, fd in the low half: the value stored in `epoll_data.u64`.
  init(packed: UInt64) {
    self.fd = Int32(bitPattern: UInt32(truncatingIfNeeded: packed))
    self.generation = UInt32(truncatingIfNeeded: packed >> 32)
  }

  var packed: UInt64 {
    UInt64(self.generation) << 32 | UInt64(UInt32(bitPattern: self.fd))
  }
}
