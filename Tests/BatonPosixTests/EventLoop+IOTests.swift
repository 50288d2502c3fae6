import BatonPosix
import Glibc
import Testing

@Suite("EventLoop I/O")
struct EventLoopIOTests {
  @Test("1 MiB echoes over a loopback TCP connection with small socket buffers", .timeLimit(.minutes(1)))
  func echoOneMebibyte() async throws {
    let payload = pattern(count: 1 << 20)
    try await withLoop { loop in
      let listener = try Socket.listen(on: SocketAddress(host: "127.0.0.1", port: 0))
      let address = try Socket.localAddress(listener)
      let received = try await withCheckedThrowingContinuation {
        (continuation: CheckedContinuation<[UInt8], any Error>) in
        loop.execute {
          do {
            let acceptor = Acceptor(loop: loop, fd: listener)
            acceptor.registration = try loop.register(fd: listener, interest: .read, handler: acceptor)
            let (fd, _) = try Socket.connect(to: address)
            try Socket.setSendBuffer(fd, bytes: 8192)
            try Socket.setReceiveBuffer(fd, bytes: 8192)
            let client = EchoClient(loop: loop, fd: fd, payload: payload, continuation: continuation)
            client.registration = try loop.register(fd: fd, interest: [.read, .write], handler: client)
          } catch {
            continuation.resume(throwing: error)
          }
        }
      }
      _ = try await loop.submit {
        // The acceptor's registration is torn down with the loop; the fd is ours to close.
        Socket.close(listener)
      }
      #expect(received.count == payload.count)
      #expect(received == payload)
    }
  }

  @Test("a reused fd number never gets an event meant for its previous registration", .timeLimit(.minutes(1)))
  func staleEventAfterReuse() async throws {
    try await withLoop { loop in
      let report = try await withCheckedThrowingContinuation {
        (continuation: CheckedContinuation<ReuseReport, any Error>) in
        loop.execute {
          do {
            let scenario = try ReuseScenario(loop: loop, continuation: continuation)
            try scenario.start()
          } catch {
            continuation.resume(throwing: error)
          }
        }
      }
      // Exactly one of the two original handlers ran; it replaced the other, whose event
      // was already collected in the same batch and had to be dropped.
      #expect(report.firstCalls + report.secondCalls == 1)
      #expect(report.replacementFD == report.replacedFD)
      #expect(report.replacementRegistration != report.replacedRegistration)
      #expect(report.replacementCalledInReplacingTurn == false)
      #expect(report.replacementCalls >= 1)
    }
  }

  @Test("a handler that deregisters in readable() gets no writable() for the same event", .timeLimit(.minutes(1)))
  func deregisterInsideCallback() async throws {
    try await withLoop { loop in
      let (a, b) = try Socket.makePair()
      defer {
        Socket.close(a)
        Socket.close(b)
      }
      let handler = Recorder(loop: loop) { recorder, event in
        if event == "readable", let registration = recorder.registration {
          loop.deregister(registration)
        }
      }
      let byte: [UInt8] = [1]
      _ = try byte.withUnsafeBytes { try Socket.write(b, $0) }
      try await loop.submit {
        handler.registration = try loop.register(fd: a, interest: [.read, .write], handler: handler)
      }
      // Two more turns after the one with the event: a live registration would have fired again.
      let events = try await loop.submit { handler.events }
      _ = try await loop.submit {}
      let later = try await loop.submit { handler.events }
      #expect(events == later)
      #expect(later == ["readable"])
    }
  }

  @Test("a peer that goes away gives readable() for its last bytes, then hangup()", .timeLimit(.minutes(1)))
  func hangupAfterReadable() async throws {
    try await withLoop { loop in
      let (a, b) = try Socket.makePair()
      let events = try await withCheckedThrowingContinuation {
        (continuation: CheckedContinuation<[String], any Error>) in
        loop.execute {
          let handler = Recorder(loop: loop) { recorder, event in
            if event == "readable" {
              var buffer = [UInt8](repeating: 0, count: 16)
              if let result = try? buffer.withUnsafeMutableBytes({ try Socket.read(a, into: $0) }) {
                recorder.events.append("\(result)")
              }
            }
            if event == "hangup", let registration = recorder.registration {
              loop.deregister(registration)
              Socket.close(a)
              continuation.resume(returning: recorder.events)
            }
          }
          do {
            handler.registration = try loop.register(fd: a, interest: .read, handler: handler)
            let last: [UInt8] = [1, 2]
            _ = try last.withUnsafeBytes { try Socket.write(b, $0) }
            Socket.close(b)
          } catch {
            continuation.resume(throwing: error)
          }
        }
      }
      #expect(events.first == "readable")
      #expect(events.dropFirst().first == "bytes(2)")
      #expect(events.last == "hangup")
      #expect(!events.contains("writable"))
    }
  }

  @Test("a refused nonblocking connect surfaces on the loop with ECONNREFUSED", .timeLimit(.minutes(1)))
  func refusedConnectOnLoop() async throws {
    let closed = try Socket.listen(on: SocketAddress(host: "127.0.0.1", port: 0))
    let address = try Socket.localAddress(closed)
    Socket.close(closed)
    let started: (fd: Int32, inProgress: Bool)
    do {
      started = try Socket.connect(to: address)
    } catch let error as IOError {
      // Refused synchronously: nothing for the loop to do.
      #expect(error.errno == ECONNREFUSED)
      return
    }
    try #require(started.inProgress)
    try await withLoop { loop in
      let error = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int32, any Error>) in
        loop.execute {
          let handler = Recorder(loop: loop) { recorder, event in
            guard event == "writable" || event == "hangup", let registration = recorder.registration else {
              return
            }
            loop.deregister(registration)
            let error = Socket.pendingError(started.fd)
            Socket.close(started.fd)
            continuation.resume(returning: error)
          }
          do {
            handler.registration = try loop.register(fd: started.fd, interest: .write, handler: handler)
          } catch {
            continuation.resume(throwing: error)
          }
        }
      }
      #expect(error == ECONNREFUSED)
    }
  }

  @Test(
    "registering the same fd twice throws EEXIST; deregister and setInterest tolerate stale registrations",
    .timeLimit(.minutes(1)))
  func registrationErrors() async throws {
    try await withLoop { loop in
      let (a, b) = try Socket.makePair()
      defer {
        Socket.close(a)
        Socket.close(b)
      }
      let outcome = try await loop.submit { () throws -> (IOError?, Interest?, Interest?) in
        let handler = Recorder(loop: loop) { _, _ in }
        let registration = try loop.register(fd: a, interest: .read, handler: handler)
        var duplicate: IOError?
        do {
          _ = try loop.register(fd: a, interest: .read, handler: handler)
        } catch let error as IOError {
          duplicate = error
        }
        try loop.setInterest(registration, [.read, .write])
        let changed = loop.interest(of: registration)
        loop.deregister(registration)
        loop.deregister(registration)
        try loop.setInterest(registration, .write)
        return (duplicate, changed, loop.interest(of: registration))
      }
      #expect(outcome.0 == IOError(errno: EEXIST, call: "epoll_ctl"))
      #expect(outcome.1 == [.read, .write])
      #expect(outcome.2 == nil)
    }
  }
}

// MARK: - Handlers

/// Records the callbacks it receives, then lets the test react. Loop thread only.
private final class Recorder: IOHandler, @unchecked Sendable {
  let loop: EventLoop
  var registration: Registration?
  var events: [String] = []
  let react: (Recorder, String) -> Void

  init(loop: EventLoop, react: @escaping (Recorder, String) -> Void) {
    self.loop = loop
    self.react = react
  }

  func readable() { self.record("readable") }
  func writable() { self.record("writable") }
  func hangup() { self.record("hangup") }

  private func record(_ event: String) {
    precondition(self.loop.inEventLoop)
    self.events.append(event)
    self.react(self, event)
  }
}

/// Accepts connections and echoes everything they send.
private final class Acceptor: IOHandler {
  let loop: EventLoop
  let fd: Int32
  var registration: Registration?

  init(loop: EventLoop, fd: Int32) {
    self.loop = loop
    self.fd = fd
  }

  func readable() {
    while let accepted = try? Socket.accept(self.fd) {
      let echo = Echo(loop: self.loop, fd: accepted)
      guard (try? Socket.setSendBuffer(accepted, bytes: 8192)) != nil,
        let registration = try? self.loop.register(fd: accepted, interest: .read, handler: echo)
      else {
        Socket.close(accepted)
        continue
      }
      echo.registration = registration
    }
  }

  func writable() {}

  func hangup() {
    if let registration {
      self.loop.deregister(registration)
    }
  }
}

/// Writes back what it reads; stops reading while it has unsent bytes (backpressure).
private final class Echo: IOHandler {
  let loop: EventLoop
  let fd: Int32
  var registration: Registration?
  var buffer = [UInt8](repeating: 0, count: 16 * 1024)
  var pending: [UInt8] = []
  var sent = 0

  init(loop: EventLoop, fd: Int32) {
    self.loop = loop
    self.fd = fd
  }

  func readable() {
    do {
      switch try self.buffer.withUnsafeMutableBytes({ try Socket.read(self.fd, into: $0) }) {
      case .bytes(let count):
        self.pending.append(contentsOf: self.buffer[0..<count])
        try self.flush()
      case .eof:
        self.close()
      case .wouldBlock:
        break
      }
    } catch {
      self.close()
    }
  }

  func writable() {
    do {
      try self.flush()
    } catch {
      self.close()
    }
  }

  func hangup() {
    self.close()
  }

  private func flush() throws {
    while self.sent < self.pending.count {
      let written = try self.pending.withUnsafeBytes { bytes in
        try Socket.write(self.fd, UnsafeRawBufferPointer(rebasing: bytes[self.sent...]))
      }
      guard let written else {
        break
      }
      self.sent += written
    }
    if self.sent == self.pending.count {
      self.pending.removeAll(keepingCapacity: true)
      self.sent = 0
    }
    if let registration {
      try self.loop.setInterest(registration, self.pending.isEmpty ? .read : .write)
    }
  }

  private func close() {
    if let registration {
      self.loop.deregister(registration)
      self.registration = nil
      Socket.close(self.fd)
    }
  }
}

/// Sends a payload with writev as the socket allows and collects the echo.
private final class EchoClient: IOHandler {
  let loop: EventLoop
  let fd: Int32
  let payload: [UInt8]
  var registration: Registration?
  var sent = 0
  var received: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 16 * 1024)
  var continuation: CheckedContinuation<[UInt8], any Error>?

  init(loop: EventLoop, fd: Int32, payload: [UInt8], continuation: CheckedContinuation<[UInt8], any Error>) {
    self.loop = loop
    self.fd = fd
    self.payload = payload
    self.continuation = continuation
    self.received.reserveCapacity(payload.count)
  }

  func writable() {
    do {
      let remaining = self.payload.count - self.sent
      // Two vectors per write to exercise the gather path.
      let half = self.sent + remaining / 2
      let written = try self.payload.withUnsafeBytes { bytes in
        let vectors = [
          IOVector(UnsafeRawBufferPointer(rebasing: bytes[self.sent..<half])),
          IOVector(UnsafeRawBufferPointer(rebasing: bytes[half...])),
        ]
        return try vectors.withUnsafeBufferPointer { try Socket.writev(self.fd, $0) }
      }
      self.sent += written ?? 0
      if self.sent == self.payload.count, let registration {
        try self.loop.setInterest(registration, .read)
      }
    } catch {
      self.finish(error)
    }
  }

  func readable() {
    do {
      switch try self.buffer.withUnsafeMutableBytes({ try Socket.read(self.fd, into: $0) }) {
      case .bytes(let count):
        self.received.append(contentsOf: self.buffer[0..<count])
        if self.received.count >= self.payload.count {
          self.finish(nil)
        }
      case .eof:
        self.finish(nil)
      case .wouldBlock:
        break
      }
    } catch {
      self.finish(error)
    }
  }

  func hangup() {
    self.finish(IOError(errno: Socket.pendingError(self.fd), call: "hangup"))
  }

  private func finish(_ error: (any Error)?) {
    if let registration {
      self.loop.deregister(registration)
      self.registration = nil
      Socket.close(self.fd)
    }
    guard let continuation else {
      return
    }
    self.continuation = nil
    if let error {
      continuation.resume(throwing: error)
    } else {
      continuation.resume(returning: self.received)
    }
  }
}

// MARK: - fd reuse scenario

struct ReuseReport: Sendable {
  var firstCalls = 0
  var secondCalls = 0
  var replacedFD: Int32 = -1
  var replacementFD: Int32 = -2
  var replacedRegistration: Registration?
  var replacementRegistration: Registration?
  var replacementCalls = 0
  var replacementCalledInReplacingTurn = false
}

/// Two readable sockets in one epoll batch. Whichever handler runs first deregisters the
/// other, closes it, puts a new readable socket on the same fd number (dup2) and registers
/// that. The other's event, already collected, must then be dropped rather than delivered
/// to either the old handler or the new one.
private final class ReuseScenario {
  let loop: EventLoop
  let continuation: CheckedContinuation<ReuseReport, any Error>
  var report = ReuseReport()
  var pairs: [(Int32, Int32)] = []
  var handlers: [Recorder] = []
  var replacement: Recorder?
  var replacingTurn = false
  var finished = false

  init(loop: EventLoop, continuation: CheckedContinuation<ReuseReport, any Error>) throws {
    self.loop = loop
    self.continuation = continuation
  }

  func start() throws {
    self.pairs = [try Socket.makePair(), try Socket.makePair()]
    for index in 0..<2 {
      let handler = Recorder(loop: self.loop) { recorder, event in
        guard event == "readable", let fd = recorder.registration?.fd else {
          return
        }
        var buffer = [UInt8](repeating: 0, count: 16)
        _ = try? buffer.withUnsafeMutableBytes { try Socket.read(fd, into: $0) }
        if index == 0 {
          self.report.firstCalls += 1
        } else {
          self.report.secondCalls += 1
        }
        if self.replacement == nil {
          self.replace(other: 1 - index)
        }
      }
      handler.registration = try self.loop.register(fd: self.pairs[index].0, interest: .read, handler: handler)
      self.handlers.append(handler)
    }
    // Both become readable before the loop's next epoll_wait: one batch holds both events.
    let byte: [UInt8] = [1]
    for pair in self.pairs {
      _ = try byte.withUnsafeBytes { try Socket.write(pair.1, $0) }
    }
  }

  private func replace(other: Int) {
    do {
      guard let old = self.handlers[other].registration else {
        return
      }
      self.loop.deregister(old)
      let fresh = try Socket.makePair()
      // dup2 closes the old socket and reuses its number for the new one.
      guard dup2(fresh.0, old.fd) == old.fd else {
        throw IOError(errno: errno, call: "dup2")
      }
      Socket.close(fresh.0)
      let oldPeer = self.pairs[other].1
      self.pairs[other] = (old.fd, fresh.1)
      Socket.close(oldPeer)

      let replacement = Recorder(loop: self.loop) { recorder, event in
        self.report.replacementCalls += 1
        if self.replacingTurn {
          self.report.replacementCalledInReplacingTurn = true
        }
        self.finish()
      }
      replacement.registration = try self.loop.register(fd: old.fd, interest: .read, handler: replacement)
      self.replacement = replacement
      self.report.replacedFD = old.fd
      self.report.replacedRegistration = old
      self.report.replacementFD = old.fd
      self.report.replacementRegistration = replacement.registration
      let byte: [UInt8] = [2]
      _ = try byte.withUnsafeBytes { try Socket.write(fresh.1, $0) }

      self.replacingTurn = true
      self.loop.runAtTurnEnd {
        self.replacingTurn = false
      }
    } catch {
      self.fail(error)
    }
  }

  private func finish() {
    guard !self.finished else {
      return
    }
    self.finished = true
    self.tearDown()
    self.continuation.resume(returning: self.report)
  }

  private func fail(_ error: any Error) {
    guard !self.finished else {
      return
    }
    self.finished = true
    self.tearDown()
    self.continuation.resume(throwing: error)
  }

  private func tearDown() {
    for handler in self.handlers + [self.replacement].compactMap({ $0 }) {
      if let registration = handler.registration {
        self.loop.deregister(registration)
      }
    }
    for pair in self.pairs {
      Socket.close(pair.0)
      Socket.close(pair.1)
    }
    // Break the handler → closure → scenario cycle.
    self.handlers = []
    self.replacement = nil
  }
}
