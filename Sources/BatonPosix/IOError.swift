import Glibc

/// A failed system call: the `errno` it left and the call's name.
///
/// Thrown by every wrapper in ``Socket`` and by ``EventLoop`` registration. `EINTR` never
/// surfaces (calls are retried) and `EAGAIN`/`EWOULDBLOCK` never surface from the
/// nonblocking reads, writes and accepts (they return `nil` or ``ReadResult/wouldBlock``).
package struct IOError: Error, Sendable, Hashable, CustomStringConvertible {
  /// The `errno` value, e.g. `ECONNREFUSED`.
  package let errno: Int32
  /// The system call that failed, e.g. `"connect"`.
  package let call: String

  package init(errno: Int32, call: String) {
    self.errno = errno
    self.call = call
  }

  /// For example `"connect: Connection refused (errno 111)"`.
  package var description: String {
    let message: String
    if let text = strerror(self.errno) {
      message = String(cString: text)
    } else {
      message = "Unknown error"
    }
    return "\(self.call): \(message) (errno \(self.errno))"
  }
}
