import BatonCore
import Testing

@testable import BatonTesting

/// The plan's decisions, frame by frame, without sockets: each fault fires exactly at the frame
/// the plan names, and the same seed gives the same trace.
@Suite("Fault engine: where each fault fires")
struct FaultEngineTests {
  /// Feeds frames to one connection's engine and keeps every decision.
  struct Driver {
    var engine: FaultEngine
    var trace: [Injection] = []

    init(_ plan: String, seed: UInt64 = 0, connection: Int = 1) throws {
      engine = FaultEngine(plan: try FaultPlan(parsing: plan, seed: seed), connection: connection)
      trace = engine.start().injections
    }

    mutating func send(_ frame: Frame, from side: FaultPlan.Side = .client) -> Decision {
      var bytes: [UInt8] = []
      FrameEncoder.encode(frame, into: &bytes)
      guard let header = FrameHeader(bytes[...]) else { return Decision() }
      let decision = engine.frame(header, from: side)
      trace += decision.injections
      return decision
    }

    /// A unary call's two client frames.
    mutating func call(_ stream: UInt32, _ payload: [UInt8] = [1, 2, 3]) -> [Decision] {
      [
        send(.open(streamID: stream, RequestHead(method: "m/M"), endStream: false)),
        send(.data(streamID: stream, payload: payload, endMessage: true, endStream: true)),
      ]
    }
  }

  static func decoded(_ bytes: [UInt8]) -> [Frame] {
    var frames: [Frame] = []
    var rest = bytes[...]
    let decoder = FrameDecoder(maxFrameSize: 1 << 24 - 1, maxMetadataSize: 1 << 20)
    while !rest.isEmpty {
      let outcome = rest.withUnsafeBytes { try? decoder.decode($0) }
      guard case .frame(let frame, let used)? = outcome else { break }
      frames.append(frame)
      rest = rest.dropFirst(used)
    }
    return frames
  }

  @Test("goaway last=3 after-opens=3: the 3rd OPEN never reaches the server, the client gets GOAWAY(3)")
  func goAwayAtThirdOpen() throws {
    var driver = try Driver("goaway last=3 after-opens=3")
    #expect(driver.send(.settings([])).forward == .whole)
    #expect(driver.call(1).allSatisfy { $0.forward == .whole })
    #expect(driver.call(3).allSatisfy { $0.forward == .whole })
    let third = driver.call(5, [9, 9])
    #expect(third[0].forward == .drop)
    #expect(
      Self.decoded(third[0].toClient).first == .goAway(lastStreamID: 3, .noError, debug: "injected by a fault plan"))
    // Its DATA is dropped too, and the connection credit it took comes back to the client.
    #expect(third[1].forward == .drop)
    #expect(Self.decoded(third[1].toClient) == [.windowUpdate(streamID: 0, increment: 2)])
    // A later OPEN (in flight when the GOAWAY left) is refused, as a stopping server does.
    let late = driver.call(7)
    #expect(late[0].forward == .drop)
    #expect(Self.decoded(late[0].toClient) == [.reset(streamID: 7, .refusedStream)])
    #expect(
      driver.trace.first
        == Injection(
          fault: 1, connection: 1, side: .client, frame: 6, stream: 5, message: 0, action: "goaway last=3 NO_ERROR"))
    #expect(driver.trace.count == 3)  // the GOAWAY, and the refusals of 5 and 7
  }

  @Test("goaway without last names the highest stream forwarded, and refuses nothing before it fires")
  func goAwayDefaultLast() throws {
    var driver = try Driver("goaway after-opens=2")
    _ = driver.send(.settings([]))
    _ = driver.call(1)
    let second = driver.call(3)
    #expect(second[0].forward == .whole)
    #expect(Self.decoded(second[0].toClient).first?.goAwayLast == 3)
    #expect(driver.call(5)[0].forward == .drop)
  }

  @Test("goaway when stream 5 has sent 2 messages")
  func goAwayAtMessage() throws {
    var driver = try Driver("goaway stream=5 at-message=2")
    _ = driver.send(.open(streamID: 5, RequestHead(method: "m/B"), endStream: false))
    #expect(driver.send(.data(streamID: 5, payload: [1], endMessage: true, endStream: false)).toClient.isEmpty)
    // A fragment is not a message.
    #expect(driver.send(.data(streamID: 5, payload: [2], endMessage: false, endStream: false)).toClient.isEmpty)
    let second = driver.send(.data(streamID: 5, payload: [3], endMessage: true, endStream: false))
    #expect(Self.decoded(second.toClient).first?.goAwayLast == 5)
    #expect(driver.trace.map(\.message) == [2])
    #expect(driver.trace.map(\.frame) == [4])
  }

  @Test("reset code=cancel at-message=2 resets the stream both ways right after its 2nd message")
  func resetCancel() throws {
    var driver = try Driver("reset stream=5 code=cancel at-message=2")
    _ = driver.call(1)
    _ = driver.call(3)
    _ = driver.send(.open(streamID: 5, RequestHead(method: "m/B"), endStream: false))
    #expect(driver.send(.data(streamID: 5, payload: [1], endMessage: true, endStream: false)).toClient.isEmpty)
    let second = driver.send(.data(streamID: 5, payload: [2], endMessage: true, endStream: false))
    #expect(second.forward == .whole)
    #expect(Self.decoded(second.toClient) == [.reset(streamID: 5, .cancel)])
    #expect(Self.decoded(second.toServer) == [.reset(streamID: 5, .cancel)])
    #expect(
      driver.trace == [
        Injection(
          fault: 1, connection: 1, side: .client, frame: 7, stream: 5, message: 2, action: "reset stream=5 CANCEL")
      ])
  }

  @Test("reset code=refused: the server never sees the stream, the client gets REFUSED_STREAM at the chosen message")
  func resetRefused() throws {
    var driver = try Driver("reset stream=3 code=refused at-message=1")
    #expect(driver.call(1).allSatisfy { $0.forward == .whole })
    let refused = driver.call(3, [1, 2, 3, 4])
    #expect(refused.allSatisfy { $0.forward == .drop })
    #expect(
      Self.decoded(refused[1].toClient) == [
        .windowUpdate(streamID: 0, increment: 4), .reset(streamID: 3, .refusedStream),
      ])
    // The retry, on a new stream, goes through.
    #expect(driver.call(5).allSatisfy { $0.forward == .whole })
  }

  @Test("from=server counts the server's frames; cut mid-frame forwards part of the triggering frame")
  func cutMidFrame() throws {
    var driver = try Driver("cut mid-frame stream=1 at-message=1 from=server", seed: 7)
    _ = driver.call(1)
    #expect(driver.send(.settings([]), from: .server).cut == false)
    let reply = driver.send(
      .data(streamID: 1, payload: Array(repeating: 1, count: 40), endMessage: true, endStream: false), from: .server)
    #expect(reply.cut)
    guard case .prefix(let sent) = reply.forward else {
      Issue.record("expected a partial frame, got \(reply.forward)")
      return
    }
    #expect((1..<49).contains(sent))
    #expect(driver.trace.first?.action == "cut after \(sent) of 49 bytes")
    #expect(driver.trace.first?.side == .server)
    #expect(driver.trace.first?.frame == 2)
  }

  @Test("stall, withheld PING ACKs and delays apply to the frames the plan names")
  func stallWithholdDelay() throws {
    var driver = try Driver(
      "stall 500ms after-frames=2; withhold-ping-ack count=2 after-frames=1; delay 20ms frames=2 after-frames=3 from=server"
    )
    #expect(driver.send(.settings([])).stall == nil)
    #expect(driver.send(.ping(ack: true, payload: 1)).forward == .drop)  // frame 2: withheld, and the stall
    #expect(driver.trace.contains { $0.action == "stall 500ms" && $0.frame == 2 })
    #expect(driver.send(.ping(ack: true, payload: 2)).forward == .drop)
    #expect(driver.send(.ping(ack: true, payload: 3)).forward == .whole)  // only two withheld
    #expect(driver.send(.settings([]), from: .server).delay == nil)
    #expect(driver.send(.ping(ack: false, payload: 4), from: .server).delay == nil)
    #expect(driver.send(.ping(ack: false, payload: 5), from: .server).delay == .milliseconds(20))
    #expect(driver.send(.ping(ack: false, payload: 6), from: .server).delay == .milliseconds(20))
    #expect(driver.send(.ping(ack: false, payload: 7), from: .server).delay == nil)
  }

  @Test("drip splits frames into seeded pieces that add up to the frame")
  func drip() throws {
    var driver = try Driver("drip bytes=5 every=1ms frames=2 after-opens=1", seed: 3)
    let decisions = driver.call(1, Array(repeating: 0, count: 30))
    for (decision, size) in zip(decisions, [9 + 2 + 3 + 8 + 2, 39]) {
      guard case .pieces(let pieces, let every) = decision.forward else {
        Issue.record("not dripped: \(decision.forward)")
        continue
      }
      #expect(pieces.reduce(0, +) == size)
      #expect(pieces.allSatisfy { (1...5).contains($0) })
      #expect(every == .milliseconds(1))
    }
    #expect(driver.call(3)[0].forward == .whole)
  }

  @Test("faults fire only on the connection they name")
  func connectionScoped() throws {
    var first = try Driver("goaway after-opens=1 connection=2", connection: 1)
    #expect(first.call(1)[0].toClient.isEmpty)
    var second = try Driver("goaway after-opens=1 connection=2", connection: 2)
    #expect(!second.call(1)[0].toClient.isEmpty)
  }

  @Test("the same seed gives the same trace; other seeds move what the plan leaves open")
  func sameSeedSameTrace() throws {
    let plan = "cut mid-frame after-frames=4..40; drip bytes=7 frames=3 after-frames=2..9; goaway after-opens=6..9"
    func run(_ seed: UInt64) throws -> [Injection] {
      var driver = try Driver(plan, seed: seed)
      _ = driver.send(.settings([]))
      for stream in stride(from: UInt32(1), to: 41, by: 2) {
        _ = driver.call(stream, Array(repeating: UInt8(stream), count: Int(stream)))
      }
      return driver.trace.sorted()
    }
    let traces = try (0..<8).map { try run(UInt64($0)) }
    for seed in 0..<8 { #expect(try run(UInt64(seed)) == traces[seed]) }
    #expect(Set(traces).count > 1, "eight seeds gave one trace: the seed decides nothing")
    #expect(traces.allSatisfy { trace in Set(trace.map(\.fault)) == [1, 2, 3] })
  }
}

extension Frame {
  var goAwayLast: UInt32? { if case .goAway(let last, _, _) = self { last } else { nil } }
}
