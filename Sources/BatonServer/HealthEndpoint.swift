import BatonCore
import BatonPosix
import BatonTransport
import Foundation

/// A tiny plain-HTTP/1.1 endpoint for orchestrators: `/livez`, `/readyz`, `/drainz`.
///
/// One request per connection (`Connection: close`), answered from the server's state on the
/// loop that accepted it. It stays up through the whole stop so that probes see the drain.
final class HealthEndpoint: Sendable {
  let listener: Listener

  init(host: String, port: Int, loop: EventLoop, answer: @escaping @Sendable (String) -> (Int, String, String)) throws {
    guard let address = try SocketAddress.resolve(host: host, port: port).first else {
      throw RPCError(code: .unavailable, message: "\(host) resolves to no address")
    }
    listener = try Listener(address: address, backlog: 64, loop: loop) { fd, _ in
      HealthExchange(fd: fd, loop: loop, answer: answer).start()
    }
  }

  var address: Endpoint { Endpoint(host: listener.address.host, port: listener.address.port) }

  func start() { listener.start() }
  func close() { listener.close() }
}

/// One request/response on one socket, driven by the loop. Reads at most 8 KiB of request head.
private final class HealthExchange: IOHandler, @unchecked Sendable {
  private let fd: Int32
  private let loop: EventLoop
  private let answer: @Sendable (String) -> (Int, String, String)
  private var registration: Registration?
  private var request: [UInt8] = []
  private var response: [UInt8] = []
  private var written = 0
  private var timer: TimerHandle?

  init(fd: Int32, loop: EventLoop, answer: @escaping @Sendable (String) -> (Int, String, String)) {
    self.fd = fd
    self.loop = loop
    self.answer = answer
  }

  /// Called on `loop` (the listener's accept callback runs there).
  func start() {
    do {
      registration = try loop.register(fd: fd, interest: .read, handler: self)
      // A probe that never finishes its request is dropped after 5 s.
      timer = loop.schedule(at: MonotonicClock.now() &+ 5_000_000_000) { [self] in loop.execute { self.finish() } }
    } catch {
      Socket.close(fd)
    }
  }

  func readable() {
    var chunk = [UInt8](repeating: 0, count: 4096)
    let result = chunk.withUnsafeMutableBytes { try? Socket.read(fd, into: $0) }
    switch result {
    case .bytes(let n)?:
      request += chunk[..<n]
    case .wouldBlock?:
      return
    case .eof?, nil:
      return finish()
    }
    guard response.isEmpty else { return }
    let head = String(decoding: request, as: UTF8.self)
    if head.contains("\r\n\r\n") || head.contains("\n\n") {
      respond(to: head)
    } else if request.count > 8192 {
      respond(status: 431, type: "text/plain", body: "request head too large\n")
    }
  }

  private func respond(to head: String) {
    let line = head.prefix { $0 != "\r" && $0 != "\n" }.split(separator: " ")
    guard line.count >= 2, line[0] == "GET" || line[0] == "HEAD" else {
      return respond(status: 405, type: "text/plain", body: "only GET\n")
    }
    let path = String(line[1].prefix { $0 != "?" })
    let (status, type, body) = answer(path)
    respond(status: status, type: type, body: line[0] == "HEAD" ? "" : body)
  }

  private func respond(status: Int, type: String, body: String) {
    let reason =
      [
        200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
        503: "Service Unavailable",
      ][status] ?? "Status"
    let bytes = Array(body.utf8)
    response =
      Array(
        "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(type)\r\nContent-Length: \(bytes.count)\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
          .utf8)
      + bytes
    writable()
  }

  func writable() {
    while written < response.count {
      let offset = written
      let sent: Int?
      do {
        sent = try response.withUnsafeBytes { try Socket.write(fd, UnsafeRawBufferPointer(rebasing: $0[offset...])) }
      } catch {
        return finish()
      }
      guard let sent else {
        if let registration { try? loop.setInterest(registration, [.read, .write]) }
        return
      }
      written += sent
    }
    Socket.shutdownWrite(fd)
    finish()
  }

  func hangup() { finish() }

  private func finish() {
    guard let registration else { return }
    self.registration = nil
    loop.deregister(registration)
    if let timer { loop.cancel(timer) }
    Socket.close(fd)
  }
}
