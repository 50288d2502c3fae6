package import CBatonShims
import Glibc

/// Thin wrappers over the socket system calls, each wrapped once.
///
/// Every function retries EINTR; EAGAIN/EWOULDBLOCK become `nil` or
/// ``ReadResult/wouldBlock``; any other failure throws ``IOError``. Sockets are created
/// nonblocking and close-on-exec. `close` is never retried (Linux releases the descriptor
/// even when close reports an error, so a retry could close someone else's reuse of it).
package enum Socket {
  /// Opens a listening TCP socket bound to `address` (port 0 lets the kernel choose; read it
  /// back with ``localAddress(_:)``), with SO_REUSEADDR set.
  /// - Throws: ``IOError`` from socket, setsockopt, bind (e.g. EADDRINUSE) or listen.
  package static func listen(on address: SocketAddress, backlog: Int32 = 1024) throws -> Int32 {
    let fd = try self.makeSocket(family: address.family)
    do {
      try self.setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
      try address.withSocketAddress { (pointer, length) throws(IOError) in
        _ = try retryingInterrupts("bind") { Glibc.bind(fd, pointer, length) }
      }
      _ = try retryingInterrupts("listen") { Glibc.listen(fd, backlog) }
    } catch {
      self.close(fd)
      throw error
    }
    return fd
  }

  /// Accepts one pending connection as a nonblocking, close-on-exec socket.
  ///
  /// Returns `nil` when no connection is pending. Connections that were reset before they
  /// could be accepted (ECONNABORTED) are skipped. EMFILE/ENFILE throw: the listener stays
  /// readable, so a level-triggered caller should pause accepting rather than spin.
  package static func accept(_ fd: Int32) throws -> Int32? {
    while true {
      let accepted = baton_accept(fd)
      if accepted >= 0 {
        return accepted
      }
      switch errno {
      case EINTR, ECONNABORTED:
        continue
      case EAGAIN, EWOULDBLOCK:
        return nil
      case let code:
        throw IOError(errno: code, call: "accept4")
      }
    }
  }

  /// Starts a nonblocking TCP connect to `address`.
  ///
  /// With `inProgress` true, wait for the fd to become writable (or hang up), then read the
  /// outcome with ``pendingError(_:)``. The fd belongs to the caller, who must close it.
  /// - Throws: ``IOError`` when the connect fails at once (the socket is closed then).
  package static func connect(to address: SocketAddress) throws -> (fd: Int32, inProgress: Bool) {
    let fd = try self.makeSocket(family: address.family)
    do {
      let started = try address.withSocketAddress { (pointer, length) throws(IOError) -> Bool in
        // A nonblocking connect interrupted by a signal keeps going in the background
        // (connect(2)), so EINTR means "in progress", not "retry".
        if Glibc.connect(fd, pointer, length) == 0 {
          return false
        }
        let code = errno
        if code == EINPROGRESS || code == EINTR {
          return true
        }
        throw IOError(errno: code, call: "connect")
      }
      return (fd, started)
    } catch {
      self.close(fd)
      throw error
    }
  }

  /// The socket's pending error (SO_ERROR), which also clears it: 0 when a nonblocking
  /// connect succeeded, otherwise its errno (e.g. ECONNREFUSED).
  package static func pendingError(_ fd: Int32) -> Int32 {
    var value: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    while getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) == -1 {
      let code = errno
      if code != EINTR {
        return code
      }
    }
    return value
  }

  /// The address the socket is bound to (getsockname).
  package static func localAddress(_ fd: Int32) throws -> SocketAddress {
    try self.address(fd, call: "getsockname") { getsockname(fd, $0, $1) }
  }

  /// The address of the connected peer (getpeername).
  package static func remoteAddress(_ fd: Int32) throws -> SocketAddress {
    try self.address(fd, call: "getpeername") { getpeername(fd, $0, $1) }
  }

  /// Bytes received and not yet read (FIONREAD). 0 when the call fails: the answer is a hint.
  package static func readableBytes(_ fd: Int32) -> Int {
    max(0, Int(baton_readable_bytes(fd)))
  }

  /// Disables Nagle's algorithm (TCP_NODELAY) so small frames leave at once.
  package static func setNoDelay(_ fd: Int32) throws {
    try self.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
  }

  /// Sets SO_RCVBUF (the kernel doubles it and applies a minimum).
  package static func setReceiveBuffer(_ fd: Int32, bytes: Int) throws {
    try self.setOption(fd, level: SOL_SOCKET, name: SO_RCVBUF, value: Int32(clamping: bytes))
  }

  /// Sets SO_SNDBUF (the kernel doubles it and applies a minimum).
  package static func setSendBuffer(_ fd: Int32, bytes: Int) throws {
    try self.setOption(fd, level: SOL_SOCKET, name: SO_SNDBUF, value: Int32(clamping: bytes))
  }

  /// Reads into `buffer`. An empty buffer reads nothing and returns `.bytes(0)`.
  /// - Throws: ``IOError`` for errors such as ECONNRESET.
  @inline(__always)
  package static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws -> ReadResult {
    guard let base = buffer.baseAddress, buffer.count > 0 else {
      return .bytes(0)
    }
    guard let count = try nonBlocking("read", { Glibc.read(fd, base, buffer.count) }) else {
      return .wouldBlock
    }
    return count == 0 ? .eof : .bytes(count)
  }

  /// Writes up to ``maxBuffersPerWrite`` of `buffers`, in order, with one
  /// `sendmsg(MSG_NOSIGNAL)`.
  ///
  /// Returns the number of bytes written (possibly fewer than offered), or `nil` when the
  /// socket's send buffer is full.
  /// - Throws: ``IOError``, e.g. EPIPE or ECONNRESET when the peer is gone (no SIGPIPE).
  @inline(__always)
  package static func writev(_ fd: Int32, _ buffers: UnsafeBufferPointer<iovec>) throws -> Int? {
    guard let base = buffers.baseAddress, buffers.count > 0 else {
      return 0
    }
    var message = msghdr()
    message.msg_iov = UnsafeMutablePointer(mutating: base)
    message.msg_iovlen = min(buffers.count, self.maxBuffersPerWrite)
    return try nonBlocking("sendmsg") { sendmsg(fd, &message, BATON_MSG_NOSIGNAL) }
  }

  /// Writes `bytes` with one `send(MSG_NOSIGNAL)`: bytes written, or `nil` if the send buffer
  /// is full.
  /// - Throws: ``IOError``, e.g. EPIPE or ECONNRESET.
  package static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws -> Int? {
    guard let base = bytes.baseAddress, bytes.count > 0 else {
      return 0
    }
    return try nonBlocking("send") { send(fd, base, bytes.count, BATON_MSG_NOSIGNAL) }
  }

  /// The most buffers one ``writev(_:_:)`` sends (IOV_MAX).
  package static let maxBuffersPerWrite = Int(BATON_IOV_MAX)

  /// Half-closes the socket for writing (SHUT_WR): the peer reads EOF after the bytes
  /// already sent. Errors are ignored (the peer may already be gone).
  package static func shutdownWrite(_ fd: Int32) {
    _ = Glibc.shutdown(fd, Int32(SHUT_WR))
  }

  /// Closes `fd`. Never retried, errors ignored. Deregister it from its loop first.
  package static func close(_ fd: Int32) {
    _ = Glibc.close(fd)
  }

  /// A connected pair of nonblocking, close-on-exec Unix stream sockets.
  package static func makePair() throws -> (Int32, Int32) {
    var fds: (Int32, Int32) = (-1, -1)
    _ = try withUnsafeMutableBytes(of: &fds) { (bytes) throws(IOError) -> Int32 in
      let pointer = bytes.baseAddress?.assumingMemoryBound(to: Int32.self)
      return try retryingInterrupts("socketpair") {
        socketpair(AF_UNIX, BATON_SOCK_STREAM_NONBLOCK_CLOEXEC, 0, pointer)
      }
    }
    return fds
  }

  // MARK: - Helpers

  private static func makeSocket(family: Int32) throws(IOError) -> Int32 {
    try retryingInterrupts("socket") { socket(family, BATON_SOCK_STREAM_NONBLOCK_CLOEXEC, 0) }
  }

  private static func setOption(_ fd: Int32, level: Int32, name: Int32, value: Int32) throws(IOError) {
    var value = value
    _ = try retryingInterrupts("setsockopt") {
      setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
    }
  }

  private static func address(
    _ fd: Int32,
    call: String,
    _ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
  ) throws(IOError) -> SocketAddress {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    return try withUnsafeMutableBytes(of: &storage) { (bytes) throws(IOError) -> SocketAddress in
      guard let base = bytes.baseAddress else {
        throw IOError(errno: EINVAL, call: call)
      }
      _ = try retryingInterrupts(call) { body(base.assumingMemoryBound(to: sockaddr.self), &length) }
      return try SocketAddress(UnsafeRawPointer(base), call: call)
    }
  }
}
