import BatonPosix
import Glibc
import Testing

@Suite("Socket")
struct SocketTests {
  @Test("listen on 127.0.0.1:0 binds a kernel-chosen port that localAddress reads back")
  func listenReadsBackPort() throws {
    let fd = try Socket.listen(on: SocketAddress(host: "127.0.0.1", port: 0))
    defer { Socket.close(fd) }
    let address = try Socket.localAddress(fd)
    #expect(address.host == "127.0.0.1")
    #expect((1...65_535).contains(address.port))
  }

  @Test("listening twice on the same port fails with EADDRINUSE")
  func listenTwiceFails() throws {
    let first = try Socket.listen(on: SocketAddress(host: "127.0.0.1", port: 0))
    defer { Socket.close(first) }
    let address = try Socket.localAddress(first)
    #expect(throws: IOError(errno: EADDRINUSE, call: "bind")) {
      let second = try Socket.listen(on: address)
      Socket.close(second)
    }
  }

  @Test("connect to a closed port reports ECONNREFUSED", .timeLimit(.minutes(1)))
  func connectRefused() throws {
    let listener = try Socket.listen(on: SocketAddress(host: "127.0.0.1", port: 0))
    let address = try Socket.localAddress(listener)
    Socket.close(listener)

    do {
      let (fd, inProgress) = try Socket.connect(to: address)
      defer { Socket.close(fd) }
      // Loopback usually refuses synchronously; if not, the answer arrives as SO_ERROR.
      try #require(inProgress)
      #expect(waitFor(fd, Int32(POLLOUT)))
      #expect(Socket.pendingError(fd) == ECONNREFUSED)
    } catch let error as IOError {
      #expect(error == IOError(errno: ECONNREFUSED, call: "connect"))
    }
  }

  @Test("connect to a non-numeric host fails with EINVAL instead of resolving")
  func connectNeedsNumericHost() {
    #expect(throws: IOError(errno: EINVAL, call: "inet_pton")) {
      _ = try Socket.connect(to: SocketAddress(host: "localhost", port: 80))
    }
  }

  @Test("accept returns nil when no connection is pending")
  func acceptWithNothingPending() throws {
    let fd = try Socket.listen(on: SocketAddress(host: "127.0.0.1", port: 0))
    defer { Socket.close(fd) }
    #expect(try Socket.accept(fd) == nil)
  }

  @Test("an accepted socket's addresses mirror the client's", .timeLimit(.minutes(1)))
  func addressesMirror() throws {
    let (client, server) = try connectedPair()
    defer {
      Socket.close(client)
      Socket.close(server)
    }
    #expect(try Socket.localAddress(client) == Socket.remoteAddress(server))
    #expect(try Socket.remoteAddress(client) == Socket.localAddress(server))
    try Socket.setNoDelay(client)
    try Socket.setReceiveBuffer(server, bytes: 4096)
    try Socket.setSendBuffer(client, bytes: 4096)
  }

  @Test("read returns wouldBlock with nothing sent and eof after the peer closes", .timeLimit(.minutes(1)))
  func readWouldBlockThenEOF() throws {
    let (client, server) = try connectedPair()
    defer { Socket.close(server) }
    var buffer = [UInt8](repeating: 0, count: 16)
    #expect(try buffer.withUnsafeMutableBytes { try Socket.read(server, into: $0) } == .wouldBlock)

    let sent: [UInt8] = [1, 2, 3]
    #expect(try sent.withUnsafeBytes { try Socket.write(client, $0) } == 3)
    Socket.close(client)

    #expect(try readExactly(server, count: 3) == sent)
    #expect(waitFor(server, Int32(POLLIN)))
    #expect(try buffer.withUnsafeMutableBytes { try Socket.read(server, into: $0) } == .eof)
  }

  @Test("shutdownWrite lets the peer read eof while the socket can still receive", .timeLimit(.minutes(1)))
  func shutdownWriteHalfCloses() throws {
    let (client, server) = try connectedPair()
    defer {
      Socket.close(client)
      Socket.close(server)
    }
    Socket.shutdownWrite(client)
    var buffer = [UInt8](repeating: 0, count: 16)
    #expect(waitFor(server, Int32(POLLIN)))
    #expect(try buffer.withUnsafeMutableBytes { try Socket.read(server, into: $0) } == .eof)

    let reply: [UInt8] = [42]
    #expect(try reply.withUnsafeBytes { try Socket.write(server, $0) } == 1)
    #expect(try readExactly(client, count: 1) == reply)
  }

  @Test("writev of several buffers arrives in order", .timeLimit(.minutes(1)))
  func writevGathersInOrder() throws {
    let (client, server) = try connectedPair()
    defer {
      Socket.close(client)
      Socket.close(server)
    }
    let parts: [[UInt8]] = [Array("hello".utf8), Array(", ".utf8), [], Array("gathered".utf8), Array(" world".utf8)]
    let total = parts.reduce(0) { $0 + $1.count }

    let written = try parts[0].withUnsafeBytes { a in
      try parts[1].withUnsafeBytes { b in
        try parts[2].withUnsafeBytes { c in
          try parts[3].withUnsafeBytes { d in
            try parts[4].withUnsafeBytes { e in
              let vectors = [IOVector(a), IOVector(b), IOVector(c), IOVector(d), IOVector(e)]
              return try vectors.withUnsafeBufferPointer { try Socket.writev(client, $0) }
            }
          }
        }
      }
    }
    #expect(written == total)
    #expect(try readExactly(server, count: total) == Array(parts.joined()))
  }

  @Test("writev with no buffers writes nothing")
  func writevEmpty() throws {
    let (client, server) = try connectedPair()
    defer {
      Socket.close(client)
      Socket.close(server)
    }
    let none: [IOVector] = []
    #expect(try none.withUnsafeBufferPointer { try Socket.writev(client, $0) } == 0)
  }

  @Test("writev returns nil once the send buffer is full", .timeLimit(.minutes(1)))
  func writevWouldBlock() throws {
    let (client, server) = try connectedPair()
    defer {
      Socket.close(client)
      Socket.close(server)
    }
    try Socket.setSendBuffer(client, bytes: 4096)
    try Socket.setReceiveBuffer(server, bytes: 4096)
    let chunk = [UInt8](repeating: 7, count: 64 * 1024)
    var sawFull = false
    var total = 0
    // Nobody reads, so the kernel's buffers must fill within a few MiB.
    for _ in 0..<1024 where !sawFull {
      let written = try chunk.withUnsafeBytes { bytes in
        try [IOVector(bytes)].withUnsafeBufferPointer { try Socket.writev(client, $0) }
      }
      if let written {
        total += written
      } else {
        sawFull = true
      }
    }
    #expect(sawFull)
    #expect(total > 0)
  }

  @Test("writing to a peer that closed throws EPIPE or ECONNRESET instead of raising SIGPIPE", .timeLimit(.minutes(1)))
  func writeToClosedPeer() throws {
    let (client, server) = try connectedPair()
    defer { Socket.close(client) }
    Socket.close(server)
    let chunk = [UInt8](repeating: 1, count: 4096)
    var failure: IOError?
    // The first write may succeed (the RST comes back after it); a later one must fail.
    for _ in 0..<1000 where failure == nil {
      do {
        _ = try chunk.withUnsafeBytes { bytes in
          try [IOVector(bytes)].withUnsafeBufferPointer { try Socket.writev(client, $0) }
        }
        waitFor(client, Int32(POLLIN))
      } catch let error as IOError {
        failure = error
      }
    }
    let error = try #require(failure)
    #expect(error.errno == EPIPE || error.errno == ECONNRESET)
    #expect(error.call == "sendmsg")
  }

  @Test("a Unix socket pair carries bytes both ways")
  func socketPair() throws {
    let (a, b) = try Socket.makePair()
    defer {
      Socket.close(a)
      Socket.close(b)
    }
    let sent: [UInt8] = [9, 8, 7]
    #expect(try sent.withUnsafeBytes { try Socket.write(a, $0) } == 3)
    #expect(try readExactly(b, count: 3) == sent)
  }
}

@Suite("IOError")
struct IOErrorTests {
  @Test("description names the call, the message and the errno")
  func description() {
    let error = IOError(errno: ECONNREFUSED, call: "connect")
    #expect(error.description == "connect: Connection refused (errno \(ECONNREFUSED))")
  }
}

@Suite("MonotonicClock")
struct MonotonicClockTests {
  @Test("now never goes backwards and deadline(after:) is in the future")
  func monotonic() {
    let first = MonotonicClock.now()
    let deadline = MonotonicClock.deadline(after: .milliseconds(5))
    let second = MonotonicClock.now()
    #expect(second >= first)
    #expect(deadline >= first + 5_000_000)
    #expect(MonotonicClock.deadline(after: .seconds(-1)) >= first)
    #expect(MonotonicClock.deadline(after: .seconds(Int64.max)) == .max)
  }
}
