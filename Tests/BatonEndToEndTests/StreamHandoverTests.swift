import BatonCore
import BatonPosix
import Glibc
import Testing

@testable import BatonTransport

/// What a client call that moves to another stream relies on from the one it leaves: the
/// messages that arrived unread can be taken over (with the count a checkpoint's index uses),
/// and a reader still on the left stream learns that it was released, never that the call ended.
@Suite("A stream a call leaves: its unread messages, and its reader", .timeLimit(.minutes(1)))
struct StreamHandoverTests {
  /// `body` with a client connection on a socket pair whose peer (the descriptor) has sent its
  /// preface and SETTINGS; the loop and the peer's end go when it returns.
  private func withConnection(_ body: (Connection, Int32) async throws -> Void) async throws {
    let group = EventLoopGroup(threads: 1)
    defer { group.shutdown() }
    let (client, peerFD) = try await connected(group.next())
    defer { Glibc.close(peerFD) }
    try await body(client, peerFD)
  }

  /// A client connection on a socket pair whose peer has sent its preface and SETTINGS.
  private func connected(_ loop: EventLoop) async throws -> (Connection, Int32) {
    let (peerFD, clientFD) = try Socket.makePair()
    let (notices, sink) = AsyncStream.makeStream(of: Bool.self)
    let client = Connection(
      fd: clientFD, loop: loop, role: .client, peer: "pair", settings: .defaults, limits: TransportLimits()
    ) { _, notice in
      if case .ready = notice { sink.yield(true) }
    }
    var hello = Preface.bytes
    FrameEncoder.encode(.settings([]), into: &hello)
    _ = hello.withUnsafeBytes { Glibc.write(peerFD, $0.baseAddress, $0.count) }
    client.start()
    var iterator = notices.makeAsyncIterator()
    _ = await iterator.next()
    return (client, peerFD)
  }

  /// The peer sends `messages` to the client on `id`, one-byte messages, in one write.
  private func send(_ peerFD: Int32, _ id: UInt32, _ messages: [UInt8]) {
    var frames: [UInt8] = []
    for message in messages {
      FrameEncoder.appendData(&frames, streamID: id, payload: [message], endMessage: true, endStream: false)
    }
    _ = frames.withUnsafeBytes { Glibc.write(peerFD, $0.baseAddress, $0.count) }
  }

  @Test("the unread messages are taken in order, with the count of all that arrived")
  func takeUnread() async throws {
    try await withConnection { client, peerFD in
      let stream = try client.openStream(RequestHead(method: "test/Watch"), message: [1], endStream: true)
      let fence = try client.openStream(RequestHead(method: "test/Watch"), message: [1], endStream: true)
      // Five messages on the stream, then one on the fence: a connection reads in order, so once
      // the fence's message is here, so are the five.
      send(peerFD, stream.id, [0, 1, 2, 3, 4])
      send(peerFD, fence.id, [9])
      #expect(try await fence.receive() == [9])
      #expect(try await stream.receive() == [0])
      #expect(stream.taken == 1)

      var (unread, arrived) = stream.takeUnread()
      #expect(arrived == 5)
      var messages: [[UInt8]] = []
      while let message = unread.popFirst() { messages.append(message) }
      #expect(messages == [[1], [2], [3], [4]])
      #expect(stream.taken == 5, "what was taken over counts as taken")
      #expect(stream.takeUnread().unread.isEmpty)
      stream.release()
      fence.release()
    }
  }

  @Test("a released stream's reader fails with `released`, parked or reading after (100 rounds)")
  func releasedReader() async throws {
    try await withConnection { client, _ in
      for round in 0..<100 {
        let stream = try client.openStream(RequestHead(method: "test/Watch"), message: [1], endStream: true)
        let reader = Task { () -> (any Error)? in
          do {
            _ = try await stream.receive()
            return nil
          } catch {
            return error
          }
        }
        // Released while the reader is parked, or before it reads: it must never see nil (the
        // call's end) from a stream its call left.
        for _ in 0..<(round % 4) { await Task.yield() }
        stream.release()
        let outcome = await reader.value
        #expect(outcome as? StreamFailure == .released, "round \(round): \(String(describing: outcome))")
      }
    }
  }
}
