package import BatonPosix
import Glibc

/// Opens a non-blocking TCP connection on a loop and reports when it is established.
package enum Connector {
  /// Connects to the first address of `host:port` that accepts, within `timeout` ns in all.
  /// - Throws: ``IOError`` from the last address tried, or a timeout `IOError(ETIMEDOUT)`.
  package static func connect(
    host: String, port: Int, loop: EventLoop, timeout: UInt64
  ) async throws -> (fd: Int32, peer: String) {
    let addresses = try SocketAddress.resolve(host: host, port: port)
    let deadline = MonotonicClock.now() &+ timeout
    var lastError: any Error = IOError(errno: ECONNREFUSED, call: "connect")
    for address in addresses {
      do {
        let fd = try await connect(to: address, loop: loop, deadline: deadline)
        try? Socket.setNoDelay(fd)
        return (fd, address.description)
      } catch {
        lastError = error
      }
    }
    throw lastError
  }

  private static func connect(to address: SocketAddress, loop: EventLoop, deadline: UInt64) async throws -> Int32 {
    let (fd, inProgress) = try Socket.connect(to: address)
    guard inProgress else { return fd }
    let waiter = ConnectWaiter(fd: fd, loop: loop)
    do {
      try await waiter.wait(deadline: deadline)
      return fd
    } catch {
      Socket.close(fd)
      throw error
    }
  }
}

/// Waits for a non-blocking connect to finish: writable means done, SO_ERROR says how.
private final class ConnectWaiter: IOHandler, @unchecked Sendable {
  let fd: Int32
  let loop: EventLoop
  private var registration: Registration?
  private var timer: TimerHandle?
  private var continuation: CheckedContinuation<Void, any Error>?  // loop thread only

  init(fd: Int32, loop: EventLoop) {
    self.fd = fd
    self.loop = loop
  }

  func wait(deadline: UInt64) async throws {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
      loop.execute { [self] in
        self.continuation = continuation
        do {
          registration = try loop.register(fd: fd, interest: .write, handler: self)
        } catch {
          return finish(error)
        }
        timer = loop.schedule(at: deadline) { [self] in
          loop.execute { self.finish(IOError(errno: ETIMEDOUT, call: "connect")) }
        }
      }
    }
  }

  private func finish(_ error: (any Error)?) {
    guard let continuation else { return }
    self.continuation = nil
    if let registration { loop.deregister(registration) }
    registration = nil
    if let timer { loop.cancel(timer) }
    if let error { continuation.resume(throwing: error) } else { continuation.resume() }
  }

  func readable() {}
  func writable() {
    let code = Socket.pendingError(fd)
    finish(code == 0 ? nil : IOError(errno: code, call: "connect"))
  }
  func hangup() {
    let code = Socket.pendingError(fd)
    finish(IOError(errno: code == 0 ? ECONNREFUSED : code, call: "connect"))
  }
}
