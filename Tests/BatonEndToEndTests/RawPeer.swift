import BatonCore
import BatonPosix
import Foundation
import Glibc

/// A hand-driven Baton peer on a blocking socket, for feeding a server bytes no real client
/// would send and reading back exactly what it answers.
/// Used by one test task at a time; `@unchecked Sendable` only so tests can hold it across awaits.
final class RawPeer: @unchecked Sendable {
  let fd: Int32
  /// The socket's device and inode: see `deinit`.
  private let socketIdentity: SocketIdentity?
  private var buffer = InboundBuffer()
  private var sawPreface = false
  private let decoder = FrameDecoder(settings: .defaults)
  /// Held by whoever reads: each `read` runs on a thread of its own, and ThreadSanitizer cannot
  /// see the ordering a continuation gives between one reading thread and the next.
  private let reading = Locked(())

  /// `receiveTimeoutSeconds` only bounds a read whose frame or close never comes (a failing
  /// test): generous, since a loaded machine may take seconds to answer.
  init(port: Int, receiveTimeoutSeconds: Int = 60) throws {
    fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    socketIdentity = SocketIdentity(fd)
    guard fd >= 0 else { throw RawPeerError.socket(errno) }
    var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    guard connectLoopback(fd, port: port) == 0 else {
      close(fd)
      throw RawPeerError.connect(errno)
    }
  }

  /// Wraps a socket a ``RawServer`` accepted.
  init(acceptedFD: Int32, receiveTimeoutSeconds: Int = 60) {
    fd = acceptedFD
    socketIdentity = SocketIdentity(acceptedFD)
    var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
  }

  /// Closes the socket, but only while `fd` still is this socket: a test may close it itself
  /// (HardeningTests does, through `fdForTests`), and by now the number may belong to another
  /// test's socket or loop, which a second close would break (seen as EBADF on a client's write
  /// in a parallel run).
  deinit {
    if let socketIdentity, SocketIdentity(fd) == socketIdentity { close(fd) }
  }

  /// Ends the connection now, as a killed process would (FIN both ways); the descriptor itself
  /// closes with the peer.
  func shutdown() { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

  func send(_ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
      let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
      if n <= 0 { return }
      offset += n
    }
  }

  /// Sends the client preface and an empty SETTINGS (defaults).
  func handshake(settings: [Frame.Setting] = []) {
    var bytes = Preface.bytes
    FrameEncoder.encode(.settings(settings), into: &bytes)
    send(bytes)
  }

  func send(_ frames: Frame...) {
    var bytes: [UInt8] = []
    for frame in frames { FrameEncoder.encode(frame, into: &bytes) }
    send(bytes)
  }

  /// Reads frames until `stop` says so, the server closes, or the receive timeout passes.
  /// Returns them and whether the connection reached EOF. The blocking reads run on a thread of
  /// their own: on Swift's small cooperative pool they could starve the server under test.
  func read(until stop: @escaping @Sendable (Frame) -> Bool = { _ in false }) async -> (frames: [Frame], closed: Bool) {
    await withCheckedContinuation { continuation in
      let thread = Thread { continuation.resume(returning: self.readBlocking(until: stop)) }
      thread.start()
    }
  }

  /// The frames already received, without waiting for more.
  func readNow() -> [Frame] {
    reading.withLock { _ in readNowLocked() }
  }

  private func readNowLocked() -> [Frame] {
    var frames: [Frame] = []
    while true {
      while let frame = nextBuffered() { frames.append(frame) }
      let count = buffer.write(minimumSpace: 65_536) { tail -> Int in
        max(recv(fd, tail.baseAddress, tail.count, Int32(MSG_DONTWAIT)), 0)
      }
      if count == 0 { return frames }
    }
  }

  private func readBlocking(until stop: (Frame) -> Bool) -> (frames: [Frame], closed: Bool) {
    reading.withLock { _ in readBlockingLocked(until: stop) }
  }

  private func readBlockingLocked(until stop: (Frame) -> Bool) -> (frames: [Frame], closed: Bool) {
    var frames: [Frame] = []
    while true {
      while let frame = nextBuffered() {
        frames.append(frame)
        if stop(frame) { return (frames, false) }
      }
      var eof = false
      let count = buffer.write(minimumSpace: 65_536) { tail -> Int in
        let n = recv(fd, tail.baseAddress, tail.count, 0)
        if n == 0 { eof = true }
        return max(n, 0)
      }
      if eof || count == 0 { return (frames, eof) }
    }
  }

  private func nextBuffered() -> Frame? {
    if !sawPreface {
      guard buffer.readableCount >= Preface.length else { return nil }
      buffer.read { _ in (Preface.length, ()) }
      sawPreface = true
    }
    return buffer.read { bytes -> (Int, Frame?) in
      switch try? decoder.decode(bytes) {
      case .frame(let frame, let used)?: return (used, frame)
      default: return (0, nil)
      }
    }
  }
}

/// Which open file a descriptor number refers to: a closed number reused by another socket
/// names another inode.
struct SocketIdentity: Equatable {
  let device: UInt64
  let inode: UInt64

  init?(_ fd: Int32) {
    var info = stat()
    guard fd >= 0, fstat(fd, &info) == 0 else { return nil }
    device = UInt64(info.st_dev)
    inode = UInt64(info.st_ino)
  }
}

enum RawPeerError: Error {
  case socket(Int32)
  case connect(Int32)
}

extension Frame {
  var isGoAway: Bool { if case .goAway = self { true } else { false } }
  var goAwayCode: ErrorCode? { if case .goAway(_, let code, _) = self { code } else { nil } }
  var goAwayLastStreamID: UInt32? { if case .goAway(let last, _, _) = self { last } else { nil } }
  func resetCode(stream: UInt32) -> ErrorCode? {
    if case .reset(let id, let code) = self, id == stream { code } else { nil }
  }
  func isPingAck(_ payload: UInt64) -> Bool { if case .ping(true, payload) = self { true } else { false } }
  var isPing: Bool { if case .ping(false, _) = self { true } else { false } }
  var isTrailers: Bool { if case .trailers = self { true } else { false } }
}
