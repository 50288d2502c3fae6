import BatonCore
import Foundation
import Glibc

/// A hand-driven Baton server for client tests: a listening socket on 127.0.0.1 whose accepted
/// connections are ``RawPeer``s, scripted frame by frame (a server that misbehaves, or dies).
/// Used by one test task at a time.
final class RawServer: @unchecked Sendable {
  let fd: Int32
  let port: Int
  var endpoint: Endpoint { Endpoint(host: "127.0.0.1", port: port) }

  init() throws {
    (fd, port) = try bindLoopback(listening: true)
  }

  deinit { close(fd) }

  /// The next connection, after sending it the server's preface and SETTINGS; nil if none
  /// arrives within `timeoutSeconds`. Blocks a thread of its own, not the test's pool.
  func accept(settings: [Frame.Setting] = [], timeoutSeconds: Int32 = 10) async -> RawPeer? {
    let listener = fd
    return await withCheckedContinuation { continuation in
      Thread {
        var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, timeoutSeconds * 1000) == 1 else { return continuation.resume(returning: nil) }
        let accepted = Glibc.accept(listener, nil, nil)
        guard accepted >= 0 else { return continuation.resume(returning: nil) }
        let peer = RawPeer(acceptedFD: accepted)
        peer.handshake(settings: settings)
        continuation.resume(returning: peer)
      }.start()
    }
  }
}

extension Frame {
  /// The stream id of an OPEN.
  var openedStream: UInt32? { if case .open(let id, _, _) = self { id } else { nil } }
}

/// A TCP socket bound to 127.0.0.1 on a free port (listening, if asked): the one place tests
/// make such a socket. Throws ``RawPeerError/socket(_:)`` with the errno if any step fails.
func bindLoopback(listening: Bool) throws -> (fd: Int32, port: Int) {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else { throw RawPeerError.socket(errno) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  let ok = withUnsafeMutablePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      bind(fd, $0, length) == 0 && (!listening || listen(fd, 64) == 0) && getsockname(fd, $0, &length) == 0
    }
  }
  guard ok else {
    let code = errno
    close(fd)
    throw RawPeerError.socket(code)
  }
  return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

/// `connect(2)` of `fd` to 127.0.0.1:`port`: its result (0, or -1 with `errno` set).
func connectLoopback(_ fd: Int32, port: Int) -> Int32 {
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = UInt16(port).bigEndian
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  return withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
  }
}
