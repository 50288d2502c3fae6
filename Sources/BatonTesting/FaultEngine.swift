import BatonCore

/// One fault the proxy injected, as its trace records it: which fault, and the frame it fired
/// at. Equal plans, seeds and traffic give equal traces, so a trace is what a test compares.
public struct Injection: Sendable, Hashable, Comparable, CustomStringConvertible {
  /// The fault's number in the plan (1 for the first).
  public var fault: Int
  /// The connection's number in the proxy (1 for the first accepted).
  public var connection: Int
  /// Whose frame it fired at.
  public var side: FaultPlan.Side
  /// The frame's number among that side's frames on the connection; 0 is the connection's start.
  public var frame: Int
  /// The frame's stream (0 for the connection itself).
  public var stream: UInt32
  /// The message the frame completed on its stream, if it completed one (0 for an OPEN).
  public var message: Int?
  /// What was done, e.g. `goaway last=3 NO_ERROR` or `cut after 13 of 42 bytes`.
  public var action: String

  /// An injection as a test expects it in a trace.
  public init(
    fault: Int, connection: Int, side: FaultPlan.Side, frame: Int, stream: UInt32, message: Int?, action: String
  ) {
    self.fault = fault
    self.connection = connection
    self.side = side
    self.frame = frame
    self.stream = stream
    self.message = message
    self.action = action
  }

  /// Ordered by fault, connection, side and frame: the two directions of a connection run on
  /// their own, so the order they fire in is not part of the trace.
  public static func < (a: Injection, b: Injection) -> Bool {
    (a.fault, a.connection, a.side == .client ? 0 : 1, a.frame) < (
      b.fault, b.connection, b.side == .client ? 0 : 1, b.frame
    )
  }

  /// `fault 1 connection 1 client frame 6 stream 5 message 0: goaway last=3 NO_ERROR`.
  public var description: String {
    let message = self.message.map { " message \($0)" } ?? ""
    return "fault \(fault) connection \(connection) \(side) frame \(frame) stream \(stream)\(message): \(action)"
  }
}

/// The 9-byte header of a frame, all the proxy needs to count and steer it.
package struct FrameHeader: Sendable, Hashable {
  package var length: Int
  package var type: UInt8
  package var flags: UInt8
  package var streamID: UInt32
  /// Header and payload.
  package var total: Int { FrameEncoder.headerLength + length }

  package init(length: Int, type: UInt8, flags: UInt8, streamID: UInt32) {
    self.length = length
    self.type = type
    self.flags = flags
    self.streamID = streamID
  }

  /// Reads a header from the first 9 bytes; nil if fewer are there.
  package init?(_ bytes: ArraySlice<UInt8>) {
    guard bytes.count >= FrameEncoder.headerLength else { return nil }
    let base = bytes.startIndex
    length = Int(bytes[base]) << 16 | Int(bytes[base + 1]) << 8 | Int(bytes[base + 2])
    type = bytes[base + 3]
    flags = bytes[base + 4]
    streamID =
      (UInt32(bytes[base + 5]) << 24 | UInt32(bytes[base + 6]) << 16 | UInt32(bytes[base + 7]) << 8
        | UInt32(bytes[base + 8])) & StreamID.max
  }

  var endsMessage: Bool { type == FrameType.data && flags & FrameFlags.endMessage != 0 }
  var isPingAck: Bool { type == FrameType.ping && flags & FrameFlags.ack != 0 }
  /// A frame that belongs to a stream (WINDOW_UPDATE on stream 0 belongs to the connection).
  var isOnStream: Bool { streamID != 0 && (type <= FrameType.reset || type == FrameType.windowUpdate) }
}

/// What the proxy does with one frame, in order: wait `delay`, forward it (or part, or nothing,
/// or in pieces), write the injected frames, then cut or stall.
package struct Decision: Sendable {
  package enum Forward: Sendable, Equatable {
    case whole
    case drop
    /// Only the first n bytes, then the connection is cut.
    case prefix(Int)
    /// In pieces of these sizes, `every` apart.
    case pieces([Int], every: Duration)
  }

  package var delay: Duration?
  package var forward: Forward = .whole
  /// Encoded frames for the client, written after the forwarded frame.
  package var toClient: [UInt8] = []
  /// Encoded frames for the server, written after the forwarded frame.
  package var toServer: [UInt8] = []
  package var cut = false
  package var stall: Duration?
  package var injections: [Injection] = []
}

/// The fault plan applied to one connection: a pure state machine fed each frame's header, side
/// by side, that answers with a ``Decision``. No sockets or clocks, so tests drive it directly
/// and a trace depends only on the plan, the seed and the frames.
package struct FaultEngine: Sendable {
  private struct Armed: Sendable {
    var number: Int
    var fault: FaultPlan.Fault
    /// The trigger's count, drawn from the seed when it is a range.
    var count: Int
    var random: SplitMix64
    var fired = false
  }

  private struct Ongoing: Sendable {
    var number: Int
    var action: FaultPlan.Action
    /// Frames left; nil for all.
    var remaining: Int?
  }

  private let connection: Int
  private var armed: [Armed]
  private var frames: [FaultPlan.Side: Int] = [.client: 0, .server: 0]
  private var opens = 0
  private var messages: [FaultPlan.Side: [UInt32: Int]] = [.client: [:], .server: [:]]
  private var highestForwardedOpen: UInt32 = 0
  /// Streams above this never reach the server: the last id of a GOAWAY sent, or of one planned
  /// with an explicit `last`.
  private var hiddenAbove: UInt32?
  /// Which fault's GOAWAY went out, and with which last id, once one has.
  private var goAwaySent: (fault: Int, last: UInt32)?
  /// Streams a planned RESET REFUSED_STREAM keeps from the server, by fault number.
  private var hiddenStreams: [UInt32: Int] = [:]
  private var withheld: [FaultPlan.Side: [(fault: Int, left: Int)]] = [.client: [], .server: []]
  private var ongoing: [FaultPlan.Side: [Ongoing]] = [.client: [], .server: []]

  /// The faults of `plan` that apply to the `connection`-th connection.
  package init(plan: FaultPlan, connection: Int) {
    self.connection = connection
    var armed: [Armed] = []
    for (index, fault) in plan.faults.enumerated() where fault.connection == connection {
      var random = SplitMix64(seed: plan.seed &+ UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15)
      let count: Int
      switch fault.trigger {
      case .start: count = 0
      case .afterFrames(let written, _), .afterOpens(let written): count = written.draw(&random)
      case .atMessage(_, let message, _): count = message
      }
      armed.append(Armed(number: index + 1, fault: fault, count: count, random: random))
      if case .goAway(let last?, _) = fault.action { hiddenAbove = min(hiddenAbove ?? last, last) }
      if case .reset(let stream, .refusedStream) = fault.action { hiddenStreams[stream] = index + 1 }
    }
    self.armed = armed
  }

  /// Whether any fault applies to this connection (if not, the proxy just copies bytes).
  package var isIdle: Bool { armed.isEmpty }

  /// The faults that fire as the connection is set up, before any frame.
  package mutating func start() -> Decision {
    var decision = Decision()
    for index in armed.indices where !armed[index].fired {
      let side: FaultPlan.Side
      switch armed[index].fault.trigger {
      case .start: side = .client
      case .afterFrames(_, let from) where armed[index].count == 0: side = from
      default: continue
      }
      fire(index, side: side, header: nil, message: nil, into: &decision)
    }
    return decision
  }

  /// Decides what happens to a frame `side` sent.
  package mutating func frame(_ header: FrameHeader, from side: FaultPlan.Side) -> Decision {
    var decision = Decision()
    frames[side, default: 0] += 1
    let isOpen = side == .client && header.type == FrameType.open
    if isOpen { opens += 1 }
    var message: Int?
    if header.endsMessage {
      let count = messages[side, default: [:]][header.streamID, default: 0] + 1
      messages[side, default: [:]][header.streamID] = count
      message = count
    } else if isOpen {
      message = 0
    }

    // The server must never see a stream a GOAWAY or a RESET REFUSED_STREAM says it did not.
    let hidden = side == .client && header.isOnStream && isHidden(header.streamID)
    if hidden {
      decision.forward = .drop
      if header.type == FrameType.data && header.length > 0 {
        // As a server does for DATA it discards: the connection's credit comes back.
        FrameEncoder.appendWindowUpdate(&decision.toClient, streamID: 0, increment: UInt32(header.length))
      }
    } else if isOpen {
      highestForwardedOpen = max(highestForwardedOpen, header.streamID)
    }

    for index in armed.indices where !armed[index].fired && matches(armed[index], header, side, message) {
      fire(index, side: side, header: header, message: message, into: &decision)
    }

    if hidden, isOpen, let (fault, last) = goAwaySent, header.streamID > last {
      // An OPEN in flight when the GOAWAY left: refused, as by a stopping server (13.2 step 3).
      FrameEncoder.appendReset(&decision.toClient, streamID: header.streamID, code: .refusedStream)
      decision.injections.append(
        injection(fault, side, header, message, "refused stream \(header.streamID) (above GOAWAY last \(last))"))
    }
    applyOngoing(header, side, message, into: &decision)
    return decision
  }

  private func isHidden(_ stream: UInt32) -> Bool {
    if let hiddenAbove, stream > hiddenAbove { return true }
    return hiddenStreams[stream] != nil
  }

  private func matches(_ armed: Armed, _ header: FrameHeader, _ side: FaultPlan.Side, _ message: Int?) -> Bool {
    switch armed.fault.trigger {
    case .start: return false
    case .afterFrames(_, let from): return from == side && frames[side] == armed.count
    case .afterOpens: return side == .client && header.type == FrameType.open && opens == armed.count
    case .atMessage(let stream, _, let from):
      return from == side && header.streamID == stream && message == armed.count
        && (armed.count > 0 || header.type == FrameType.open)
    }
  }

  private mutating func fire(
    _ index: Int, side: FaultPlan.Side, header: FrameHeader?, message: Int?, into decision: inout Decision
  ) {
    armed[index].fired = true
    let number = armed[index].number
    let action: String
    switch armed[index].fault.action {
    case .goAway(let planned, let code):
      let last = planned ?? highestForwardedOpen
      FrameEncoder.appendGoAway(&decision.toClient, lastStreamID: last, code: code, debug: "injected by a fault plan")
      if goAwaySent == nil || last < goAwaySent?.last ?? last { goAwaySent = (number, last) }
      hiddenAbove = min(hiddenAbove ?? last, last)
      action = "goaway last=\(last) \(code)"
    case .reset(let stream, let code):
      FrameEncoder.appendReset(&decision.toClient, streamID: stream, code: code)
      if code != .refusedStream {
        // The server saw the stream: cancel it there too, after the triggering frame.
        FrameEncoder.appendReset(&decision.toServer, streamID: stream, code: .cancel)
      }
      action = "reset stream=\(stream) \(code)"
    case .cut(let midFrame):
      decision.cut = true
      if midFrame, let header, decision.forward == .whole, header.total > 1 {
        let sent = 1 + Int(armed[index].random.next() % UInt64(header.total - 1))
        decision.forward = .prefix(sent)
        action = "cut after \(sent) of \(header.total) bytes"
      } else {
        action = "cut"
      }
    case .stall(let duration):
      decision.stall = duration
      action = "stall \(duration.planText)"
    case .withholdPingAck(let count):
      withheld[side, default: []].append((number, count))
      action = "withhold \(count) PING ACK\(count == 1 ? "" : "s") from the \(side)"
    case .delay, .drip:
      let frames: Int
      switch armed[index].fault.action {
      case .delay(_, let count), .drip(_, _, let count): frames = count
      default: frames = 0
      }
      ongoing[side, default: []].append(
        Ongoing(number: number, action: armed[index].fault.action, remaining: frames == 0 ? nil : frames))
      return  // recorded frame by frame, in applyOngoing
    }
    decision.injections.append(
      Injection(
        fault: number, connection: connection, side: side, frame: header == nil ? 0 : frames[side] ?? 0,
        stream: header?.streamID ?? 0, message: message, action: action))
  }

  private mutating func applyOngoing(
    _ header: FrameHeader, _ side: FaultPlan.Side, _ message: Int?, into decision: inout Decision
  ) {
    if header.isPingAck, let first = withheld[side]?.first, decision.forward == .whole {
      decision.forward = .drop
      decision.injections.append(injection(first.fault, side, header, message, "withheld PING ACK"))
      if first.left <= 1 { withheld[side]?.removeFirst() } else { withheld[side]?[0].left -= 1 }
    }
    guard var active = ongoing[side], !active.isEmpty else { return }
    for index in active.indices {
      switch active[index].action {
      case .delay(let duration, _):
        decision.delay = (decision.delay ?? .zero) + duration
        decision.injections.append(injection(active[index].number, side, header, message, "delay \(duration.planText)"))
      case .drip(let maxPiece, let every, _):
        guard decision.forward == .whole else { continue }
        var pieces: [Int] = []
        var left = header.total
        let position = armed.firstIndex { $0.number == active[index].number } ?? 0
        while left > 0 {
          let piece = min(left, 1 + Int(armed[position].random.next() % UInt64(maxPiece)))
          pieces.append(piece)
          left -= piece
        }
        decision.forward = .pieces(pieces, every: every)
        decision.injections.append(
          injection(
            active[index].number, side, header, message,
            "drip \(header.total) bytes in \(pieces.count) pieces every \(every.planText)"))
      default:
        break
      }
      if let remaining = active[index].remaining { active[index].remaining = remaining - 1 }
    }
    ongoing[side] = active.filter { $0.remaining.map { $0 > 0 } ?? true }
  }

  private func injection(
    _ fault: Int, _ side: FaultPlan.Side, _ header: FrameHeader, _ message: Int?, _ action: String
  ) -> Injection {
    Injection(
      fault: fault, connection: connection, side: side, frame: frames[side] ?? 0, stream: header.streamID,
      message: message, action: action)
  }
}

extension FaultPlan.Count {
  fileprivate func draw(_ random: inout SplitMix64) -> Int {
    switch self {
    case .exactly(let value): return value
    case .between(let low, let high): return low + Int(random.next() % UInt64(high - low + 1))
    }
  }
}

/// A small, fast, seedable generator (Steele, Lea and Flood's SplitMix64): the same seed gives
/// the same numbers on every platform and Swift version, which the system generator does not
/// promise.
package struct SplitMix64: RandomNumberGenerator, Sendable {
  private var state: UInt64
  package init(seed: UInt64) { state = seed }
  package mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
