import BatonClient
import BatonCore
import BatonServer
import Testing

/// A server that must end a stream while one of its response messages is partly sent (the rest
/// waits for credit the client does not give) may not send TRAILERS, which would fall inside the
/// message (PROTOCOL.md 7.3): at the drain deadline it sends nothing and closes (13.2), at the
/// call's deadline it resets with CANCEL (10).
@Suite("A stream cut inside a response message")
struct CutInsideMessageTests {
  /// `cut/Flood` writes 250-byte messages until the call ends; `cut/Numbers` is a resumable
  /// stream of six 700-byte numbered messages with a checkpoint after each, and fires `started`
  /// (a new call only) just before the message that a 1 KiB window cannot take whole.
  private static func router(started: Signal = Signal()) -> Router {
    var router = Router()
    router.serverStreaming("cut/Flood") { _, responses, _ in
      while true { try await responses.write([UInt8](repeating: 7, count: 250)) }
    }
    // Resumable, but a new call stops after message 2 and waits for good (for an event that never
    // comes, say): it reaches no checkpoint in a drain. A resumed call goes on to message 5.
    router.serverStreaming("cut/Stuck", resumable: true) { _, responses, context in
      var next = context.resumeToken.flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
      while next < 6 {
        if next == 3 && context.resumeToken == nil { try await Task.sleep(for: .seconds(3_600)) }
        try await responses.write(numbered(next), checkpoint: Array(String(next + 1).utf8))
        next += 1
      }
    }
    router.serverStreaming("cut/Numbers", resumable: true) { _, responses, context in
      var next = context.resumeToken.flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
      while next < 6 {
        if next == 1 && context.resumeToken == nil { started.fire() }
        try await responses.write(numbered(next), checkpoint: Array(String(next + 1).utf8))
        next += 1
      }
    }
    return router
  }

  private static func numbered(_ index: Int) -> [UInt8] {
    Array(String(index).utf8) + [UInt8](repeating: UInt8(ascii: "."), count: 700 - String(index).utf8.count)
  }

  /// A raw client with a 100-byte stream window that opens `cut/Flood` and reads until the
  /// window's worth of the first message has come: from then on the server is inside a message
  /// that cannot complete. Returns the DATA bytes read.
  private static func openFlood(_ peer: RawPeer, streamID: UInt32, timeoutMicroseconds: UInt64 = 0) async -> Int {
    peer.send(
      .open(
        streamID: streamID, RequestHead(method: "cut/Flood", timeoutMicroseconds: timeoutMicroseconds),
        endStream: false),
      .data(streamID: streamID, payload: [1], endMessage: true, endStream: true))
    let bytes = Mutexed(0)
    let (frames, _) = await peer.read { frame in
      if case .data(streamID, let payload, _, _) = frame { bytes.mutate { $0 += payload.count } }
      if case .trailers(streamID, _) = frame { return true }
      return bytes.value >= 100
    }
    #expect(
      !frames.contains { if case .data(streamID, _, true, _) = $0 { true } else { false } },
      "no message of 250 bytes completes in a 100-byte window")
    return bytes.value
  }

  @Test("at the drain deadline a stream inside a message gets no TRAILERS and no RESET: the close ends it")
  func drainDeadlineInsideMessage() async throws {
    try await withTestServer(Self.router()) { server, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake(settings: [.init(id: SettingID.initialWindowSize, value: 100)])
      #expect(await Self.openFlood(peer, streamID: 1) == 100)
      // The barrier PING goes unanswered (bounded by its cap); the deadline then cuts stream 1.
      async let report = server.gracefulStop(deadline: .milliseconds(200))
      let (frames, closed) = await peer.read()
      #expect(closed, "the server closes after the cut")
      #expect(frames.contains { $0.goAwayLastStreamID == 1 }, "the final GOAWAY covers stream 1")
      #expect(!frames.contains { if case .trailers = $0 { true } else { false } }, "\(frames)")
      #expect(!frames.contains { $0.resetCode(stream: 1) != nil }, "\(frames)")
      #expect(!frames.contains { if case .data = $0 { true } else { false } }, "nothing more of the message")
      #expect(await report.cutStreams.count == 1)
    }
  }

  @Test(
    "when the call's deadline passes inside a message the server resets with CANCEL, not TRAILERS",
    arguments: 0..<3)
  func callDeadlineInsideMessage(round: Int) async throws {
    try await withTestServer(Self.router()) { _, address in
      let peer = try RawPeer(port: address.port)
      peer.handshake(settings: [.init(id: SettingID.initialWindowSize, value: 100)])
      // The handler must write before the deadline passes; on a machine too slow for that, the
      // call ends with TRAILERS before any DATA, and the next stream gets twice the time.
      var timeout: UInt64 = 200_000
      for streamID in stride(from: UInt32(1), through: 15, by: 2) {
        guard await Self.openFlood(peer, streamID: streamID, timeoutMicroseconds: timeout) == 100 else {
          timeout *= 2
          continue
        }
        let (frames, _) = await peer.read { $0.resetCode(stream: streamID) != nil || $0.isTrailers }
        #expect(frames.last?.resetCode(stream: streamID) == .cancel, "\(frames)")
        #expect(!frames.contains { if case .trailers = $0 { true } else { false } })
        return
      }
      Issue.record("the handler never wrote before its deadline, even with \(timeout / 2) µs")
    }
  }

  @Test(
    "a client whose stream is cut inside a message at the drain deadline gets UNAVAILABLE (may have been processed), not a protocol error"
  )
  func clientSeesUnavailable() async throws {
    try await withTestServer(Self.router()) { server, address in
      let narrow = Client.Configuration(connection: ConnectionSettings(initialWindowSize: 1_024))
      try await withClient(endpoints: [address], configuration: narrow) { client in
        let outcome = await #expect(throws: RPCError.self) {
          try await client.serverStreaming("cut/Flood", []) { responses in
            var iterator = responses.makeAsyncIterator()
            // One message read: the stream is open and its handler is writing. The client reads
            // no more, so the server ends up inside a message the window cannot take.
            _ = try await iterator.next()
            let report = await server.gracefulStop(deadline: .milliseconds(300))
            #expect(report.cutStreams.count == 1)
            while try await iterator.next() != nil {}
          }
        }
        #expect(outcome?.code == .unavailable, "\(String(describing: outcome))")
        #expect(outcome?.message.contains("may have been processed") == true, "\(String(describing: outcome))")
      }
    }
  }

  @Test(
    "a resumable stream cut inside a message at the drain deadline resumes from its last checkpoint elsewhere: no gap, no duplicate",
    arguments: 0..<3)
  func resumableCutResumes(round: Int) async throws {
    let started = Signal()
    let narrow = Client.Configuration(connection: ConnectionSettings(initialWindowSize: 1_024))
    try await withTwoServers(started: started) { servers, endpoints in
      let received = try await withClient(endpoints: endpoints, configuration: narrow) { client in
        let numbers = try await client.serverStreaming("cut/Numbers", []) { responses in
          // Nothing is read until the stop is over: message 0 fills 700 bytes of the 1 KiB
          // window, message 1 gets 324 bytes in and waits for credit, so the handler cannot
          // reach its next checkpoint to move: the drain deadline cuts it inside message 1.
          await started.wait()
          let carrier = try #require(servers.first { $0.progress.openStreams > 0 })
          let report = await carrier.gracefulStop(deadline: .milliseconds(300))
          #expect(report.cutStreams.count == 1 && report.migratedStreams == 0)
          var numbers: [Int] = []
          for try await message in responses {
            numbers.append(Self.number(message))
            #expect(message.count == 700)
          }
          return numbers
        }
        #expect(client.statistics.resumed == 1)
        return numbers
      }
      #expect(received == Array(0..<6))
    }
  }

  private static func number(_ message: [UInt8]) -> Int {
    Int(String(decoding: message.prefix { $0 != UInt8(ascii: ".") }, as: UTF8.self)) ?? -1
  }

  /// Two servers of ``router(started:)``, each stoppable on its own; both are stopped at once
  /// when `body` ends.
  private func withTwoServers(
    started: Signal = Signal(), _ body: ([Server], [Endpoint]) async throws -> Void
  ) async throws {
    let servers = (0..<2).map { _ in
      Server(configuration: Server.Configuration(logger: .disabled), router: Self.router(started: started))
    }
    let runs = servers.map { server in Task { try await server.run() } }
    defer {
      for server in servers { server.stopNow() }
    }
    var endpoints: [Endpoint] = []
    for server in servers { endpoints.append(try await server.listeningAddress) }
    try await body(servers, endpoints)
    for server in servers { server.stopNow() }
    for run in runs { _ = try? await run.value }
  }

  @Test(
    "a resumable stream cut at the drain deadline between messages gets no TRAILERS either, and resumes elsewhere from its last checkpoint"
  )
  func resumableCutBetweenMessagesResumes() async throws {
    try await withTwoServers { servers, endpoints in
      try await withClient(endpoints: endpoints) { client in
        let numbers = try await client.serverStreaming("cut/Stuck", []) { responses in
          var numbers: [Int] = []
          var iterator = responses.makeAsyncIterator()
          // Messages 0 to 2, then the handler waits for good: the drain deadline cuts it.
          while numbers.count < 3, let message = try await iterator.next() { numbers.append(Self.number(message)) }
          let carrier = try #require(servers.first { $0.progress.openStreams > 0 })
          let report = await carrier.gracefulStop(deadline: .milliseconds(300))
          #expect(report.cutStreams.count == 1 && report.migratedStreams == 0)
          while let message = try await iterator.next() { numbers.append(Self.number(message)) }
          return numbers
        }
        #expect(numbers == Array(0..<6), "no gap, no duplicate")
        #expect(client.statistics.resumed == 1)
      }
    }
  }
}
