package import BatonPosix

/// A listening socket on one loop. Accepts a bounded number of connections per wakeup so that a
/// connection storm cannot starve the loop's other sockets.
package final class Listener: IOHandler, @unchecked Sendable {
  package let loop: EventLoop
  package let address: SocketAddress
  private let fd: Int32
  private let onAccept: @Sendable (Int32, String) -> Void
  private var registration: Registration?
  private var closed = false

  /// Binds and listens at once (so the caller learns the port and any bind error synchronously);
  /// accepting starts with ``start()``.
  package init(
    address: SocketAddress, backlog: Int32, loop: EventLoop,
    onAccept: @escaping @Sendable (_ fd: Int32, _ peer: String) -> Void
  ) throws {
    fd = try Socket.listen(on: address, backlog: backlog)
    do {
      self.address = try Socket.localAddress(fd)
    } catch {
      Socket.close(fd)
      throw error
    }
    self.loop = loop
    self.onAccept = onAccept
  }

  package func start() {
    loop.execute { [self] in
      guard !closed else { return }
      do {
        registration = try loop.register(fd: fd, interest: .read, handler: self)
      } catch {
        close()
      }
    }
  }

  package func readable() {
    for _ in 0..<64 {
      guard !closed else { return }
      do {
        guard let client = try Socket.accept(fd) else { return }
        try? Socket.setNoDelay(client)
        let peer = (try? Socket.remoteAddress(client).description) ?? "unknown"
        onAccept(client, peer)
      } catch {
        // EMFILE and friends: stop for this wakeup; the loop calls again while connections wait.
        return
      }
    }
  }

  package func writable() {}
  package func hangup() {}

  /// Stops accepting and closes the socket. Runs on the loop; safe to call more than once.
  package func close() {
    loop.execute { [self] in
      guard !closed else { return }
      closed = true
      if let registration { loop.deregister(registration) }
      registration = nil
      Socket.close(fd)
    }
  }
}
