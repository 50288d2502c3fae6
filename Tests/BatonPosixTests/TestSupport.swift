import BatonPosix
import Dispatch
import Glibc

/// Mutable state touched only on one event loop's thread; `@unchecked` because the tests
/// confine it by construction (every access is inside work that loop runs).
final class LoopConfined<Value>: @unchecked Sendable {
  var value: Value

  init(_ value: Value) {
    self.value = value
  }
}

/// Runs `body` with a fresh one-thread loop, shutting the group down afterwards.
func withLoop<Result>(
  _ body: (EventLoop) async throws -> Result
) async rethrows -> Result {
  let group = EventLoopGroup(threads: 1)
  defer { group.shutdown() }
  return try await body(group.loops[0])
}

/// Blocks until `fd` reports one of `events` (POLLIN, POLLOUT), or 10 s pass.
/// Synchronisation on a real event, for the raw-socket tests that run without a loop.
@discardableResult
func waitFor(_ fd: Int32, _ events: Int32) -> Bool {
  var entry = pollfd(fd: fd, events: Int16(events), revents: 0)
  while true {
    let result = poll(&entry, 1, 10_000)
    if result == -1, errno == EINTR {
      continue
    }
    return result == 1
  }
}

/// A connected loopback TCP pair (client, server), both nonblocking.
func connectedPair() throws -> (client: Int32, server: Int32) {
  let listener = try Socket.listen(on: SocketAddress(host: "127.0.0.1", port: 0))
  defer { Socket.close(listener) }
  let address = try Socket.localAddress(listener)
  let (client, inProgress) = try Socket.connect(to: address)
  if inProgress {
    waitFor(client, Int32(POLLOUT))
  }
  guard Socket.pendingError(client) == 0, waitFor(listener, Int32(POLLIN)),
    let server = try Socket.accept(listener)
  else {
    Socket.close(client)
    throw IOError(errno: ECONNABORTED, call: "connectedPair")
  }
  return (client, server)
}

/// Reads from a nonblocking fd until `count` bytes arrived or EOF, waiting with poll.
func readExactly(_ fd: Int32, count: Int) throws -> [UInt8] {
  var received: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 64 * 1024)
  while received.count < count {
    let result = try chunk.withUnsafeMutableBytes { try Socket.read(fd, into: $0) }
    switch result {
    case .bytes(let n):
      received.append(contentsOf: chunk[0..<n])
    case .eof:
      return received
    case .wouldBlock:
      guard waitFor(fd, Int32(POLLIN)) else {
        return received
      }
    }
  }
  return received
}

/// Bytes with a recognisable, non-repeating-per-KiB pattern.
func pattern(count: Int) -> [UInt8] {
  (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 10) }
}

/// Runs `body` on the calling thread while `loop`'s thread is parked inside a job, so that
/// no timer, event or queued work can run on the loop until `body` returns.
func whileParked<Result>(_ loop: EventLoop, _ body: () throws -> Result) rethrows -> Result {
  let entered = DispatchSemaphore(value: 0)
  let release = DispatchSemaphore(value: 0)
  loop.execute {
    entered.signal()
    release.wait()
  }
  entered.wait()
  defer { release.signal() }
  return try body()
}
