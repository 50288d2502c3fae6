/// Receives readiness events for a file descriptor registered with an ``EventLoop``.
///
/// Every method is called on the owning loop's thread, with the registration still valid.
/// Readiness is level-triggered: an event repeats every turn until the handler reads or
/// writes until `wouldBlock`, or changes its ``Interest``.
package protocol IOHandler: AnyObject {
  /// The fd has bytes to read (or EOF, or a pending error that `read` will throw).
  func readable()

  /// The fd can take more bytes; also how a nonblocking connect reports that it finished
  /// (check ``Socket/pendingError(_:)``).
  func writable()

  /// EPOLLHUP or EPOLLERR: the connection is gone, or a nonblocking connect failed (read
  /// why with ``Socket/pendingError(_:)``). If EPOLLIN was also set, ``readable()`` runs
  /// first so that bytes already received are not lost. The event repeats until the
  /// handler deregisters, which it should do here (and then close the fd).
  func hangup()
}
