import BatonCore
import Testing

/// What an event says, without its free-text reason, so that tests compare whole sequences.
enum Seen: Hashable, CustomStringConvertible {
  case ready
  case opened(UInt32, method: String, endStream: Bool)
  case headers(UInt32, Metadata)
  case message(UInt32, [UInt8])
  /// A `messageBytes` event not passed through ``[ConnectionEvent]/resolved(in:)``.
  case unresolvedMessage(UInt32, Range<Int>)
  case endOfInput(UInt32)
  case trailers(UInt32, status: UInt8)
  case reset(UInt32, ErrorCode, byPeer: Bool)
  case writable(UInt32)
  case goAway(UInt32, ErrorCode)
  case pingAck(UInt64)
  case checkpoint(UInt32, consumed: UInt64, token: [UInt8])
  case connectionError(ErrorCode)

  var description: String {
    switch self {
    case .ready: "ready"
    case .opened(let id, let method, let endStream): "opened(\(id), \(method), endStream: \(endStream))"
    case .headers(let id, let metadata): "headers(\(id), \(metadata))"
    case .message(let id, let bytes):
      bytes.count <= 16 ? "message(\(id), \(bytes))" : "message(\(id), \(bytes.count) bytes)"
    case .unresolvedMessage(let id, let range): "unresolvedMessage(\(id), \(range))"
    case .endOfInput(let id): "endOfInput(\(id))"
    case .trailers(let id, let status): "trailers(\(id), status: \(status))"
    case .reset(let id, let code, let byPeer): "reset(\(id), \(code), byPeer: \(byPeer))"
    case .writable(let id): "writable(\(id))"
    case .goAway(let last, let code): "goAway(\(last), \(code))"
    case .pingAck(let payload): "pingAck(\(payload))"
    case .checkpoint(let id, let consumed, let token): "checkpoint(\(id), consumed: \(consumed), \(token))"
    case .connectionError(let code): "connectionError(\(code))"
    }
  }
}

extension ConnectionEvent {
  var seen: Seen {
    switch self {
    case .ready: .ready
    case .opened(let id, let head, let endStream): .opened(id, method: head.method, endStream: endStream)
    case .headers(let id, let metadata): .headers(id, metadata)
    case .message(let id, let bytes): .message(id, bytes)
    case .messageBytes(let id, let range): .unresolvedMessage(id, range)
    case .endOfInput(let id): .endOfInput(id)
    case .trailers(let id, let trailers): .trailers(id, status: trailers.status)
    case .streamReset(let id, let code, _, let byPeer): .reset(id, code, byPeer: byPeer)
    case .writable(let id): .writable(id)
    case .goAway(let last, let code, _): .goAway(last, code)
    case .pingAck(let payload): .pingAck(payload)
    case .checkpoint(let id, let consumed, let token): .checkpoint(id, consumed: consumed, token: token)
    case .connectionError(let error): .connectionError(error.code)
    }
  }
}

extension [ConnectionEvent] {
  var seen: [Seen] { map(\.seen) }

  /// The events with every in-place message (`messageBytes`) turned into a `message` with the
  /// bytes it points at in `input`, the buffer given to the `receive` call that reported it.
  func resolved(in input: [UInt8]) -> [ConnectionEvent] {
    map { event in
      guard case .messageBytes(let id, let range) = event else { return event }
      return .message(streamID: id, [UInt8](input[range]))
    }
  }
}

extension ConnectionSettings {
  var frame: Frame { .settings(wirePairs.map { Frame.Setting(id: $0.0, value: $0.1) }) }
}

/// One ``ConnectionCore`` under test, with its input buffering and a tap on what it writes.
/// A test either plays the peer by hand (raw frames) or joins two of these in a ``Pair``.
struct Driven {
  var core: ConnectionCore
  /// Every event so far, in order.
  var log: [ConnectionEvent] = []
  /// Every frame the core has written so far (after its preface), in order.
  var wrote: [Frame] = []
  /// Act like an application that takes every message at once: call `consumed` for it.
  var autoConsume = false
  private var input: [UInt8] = []
  private var prefaceChecked = false

  init(_ role: ConnectionCore.Role, settings: ConnectionSettings = .defaults) {
    core = ConnectionCore(role: role, settings: settings)
  }

  /// A core whose peer (the test) has already sent its preface and SETTINGS announcing `peer`;
  /// the core's own preface and SETTINGS are already taken from `outbound`.
  static func ready(
    _ role: ConnectionCore.Role, settings: ConnectionSettings = .defaults, peer: ConnectionSettings = .defaults,
    sourceLocation: SourceLocation = #_sourceLocation
  ) -> Driven {
    var driven = Driven(role, settings: settings)
    let events = driven.receive(Preface.bytes + encode(peer.frame))
    #expect(events.seen == [.ready], sourceLocation: sourceLocation)
    #expect(driven.written() == [settings.frame], sourceLocation: sourceLocation)
    return driven
  }

  /// Takes the bytes the core wrote since the last call, and decodes them.
  mutating func takeOutbound(sourceLocation: SourceLocation = #_sourceLocation) -> (bytes: [UInt8], frames: [Frame]) {
    let bytes = core.outbound.flattened
    core.outbound.removeAll(keepingCapacity: false)
    var body = bytes[...]
    if !prefaceChecked {
      #expect(
        Array(body.prefix(Preface.length)) == Preface.bytes, "every side starts with the preface",
        sourceLocation: sourceLocation)
      body = body.dropFirst(Preface.length)
      prefaceChecked = true
    }
    let frames = permissiveDecoder.decodeAll(Array(body), sourceLocation: sourceLocation)
    wrote += frames
    return (bytes, frames)
  }

  /// The frames the core wrote since the last call.
  mutating func written(sourceLocation: SourceLocation = #_sourceLocation) -> [Frame] {
    takeOutbound(sourceLocation: sourceLocation).frames
  }

  /// Feeds bytes, keeping an incomplete tail for the next call, and returns the events they caused.
  @discardableResult
  mutating func receive(_ bytes: [UInt8]) -> [ConnectionEvent] {
    input += bytes
    let pending = input
    var events: [ConnectionEvent] = []
    let used = pending.withUnsafeBytes { core.receive($0, into: &events) }
    precondition(used >= 0 && used <= pending.count, "receive reported \(used) of \(pending.count) bytes")
    for case .messageBytes(_, let range) in events {
      #expect(range.upperBound <= used, "an in-place message lies in the bytes receive used")
    }
    events = events.resolved(in: pending)
    input.removeFirst(used)
    if autoConsume {
      for case .message(let id, let message) in events { core.consumed(streamID: id, bytes: message.count) }
    }
    log += events
    return events
  }

  /// Encodes frames and feeds them in one go.
  @discardableResult
  mutating func receive(_ frames: Frame...) -> [ConnectionEvent] { receive(encode(frames)) }

  /// Feeds bytes one at a time.
  @discardableResult
  mutating func receiveByteByByte(_ bytes: [UInt8]) -> [ConnectionEvent] {
    var events: [ConnectionEvent] = []
    for byte in bytes { events += receive([byte]) }
    return events
  }

  /// Bytes received but not yet used (an incomplete frame).
  var unusedInput: Int { input.count }
}

/// A client core and a server core joined by two in-memory byte pipes. Nothing moves until the
/// test says so, which makes races (frames crossing on the wire) deterministic.
struct Pair {
  var client: Driven
  var server: Driven
  /// Bytes written but not yet delivered.
  var toServer: [UInt8] = []
  var toClient: [UInt8] = []

  /// Creates both sides and completes the handshake.
  init(
    client clientSettings: ConnectionSettings = .defaults, server serverSettings: ConnectionSettings = .defaults,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    client = Driven(.client, settings: clientSettings)
    server = Driven(.server, settings: serverSettings)
    let (clientEvents, serverEvents) = pump()
    #expect(clientEvents == [.ready(serverSettings)], sourceLocation: sourceLocation)
    #expect(serverEvents == [.ready(clientSettings)], sourceLocation: sourceLocation)
  }

  /// Moves what the client wrote into the pipe to the server; returns those frames.
  @discardableResult
  mutating func flushClient() -> [Frame] {
    let (bytes, frames) = client.takeOutbound()
    toServer += bytes
    return frames
  }

  @discardableResult
  mutating func flushServer() -> [Frame] {
    let (bytes, frames) = server.takeOutbound()
    toClient += bytes
    return frames
  }

  /// Gives the server everything in its pipe.
  @discardableResult
  mutating func deliverToServer() -> [ConnectionEvent] {
    defer { toServer.removeAll() }
    return server.receive(toServer)
  }

  @discardableResult
  mutating func deliverToClient() -> [ConnectionEvent] {
    defer { toClient.removeAll() }
    return client.receive(toClient)
  }

  /// Flushes the client and delivers to the server at once.
  @discardableResult
  mutating func clientToServer() -> [ConnectionEvent] {
    flushClient()
    return deliverToServer()
  }

  @discardableResult
  mutating func serverToClient() -> [ConnectionEvent] {
    flushServer()
    return deliverToClient()
  }

  /// Exchanges bytes both ways until neither side writes anything more.
  @discardableResult
  mutating func pump(sourceLocation: SourceLocation = #_sourceLocation) -> (
    client: [ConnectionEvent], server: [ConnectionEvent]
  ) {
    var clientEvents: [ConnectionEvent] = []
    var serverEvents: [ConnectionEvent] = []
    for _ in 0..<10_000 {
      flushClient()
      flushServer()
      if toServer.isEmpty && toClient.isEmpty { return (clientEvents, serverEvents) }
      serverEvents += deliverToServer()
      clientEvents += deliverToClient()
    }
    Issue.record("the two sides never went quiet", sourceLocation: sourceLocation)
    return (clientEvents, serverEvents)
  }
}

// MARK: - Frames a test peer sends

let testMethod = "test.Echo/Unary"

func openFrame(_ id: UInt32, endStream: Bool = false, metadata: Metadata = [:]) -> Frame {
  .open(streamID: id, RequestHead(method: testMethod, metadata: metadata), endStream: endStream)
}

func dataFrame(_ id: UInt32, _ payload: [UInt8], endMessage: Bool = true, endStream: Bool = false) -> Frame {
  .data(streamID: id, payload: payload, endMessage: endMessage, endStream: endStream)
}

/// `count` bytes that differ from position to position, so reassembly mistakes show.
func pattern(_ count: Int, seed: UInt8 = 0) -> [UInt8] {
  (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}

extension ConnectionCore {
  /// `sendMessage` that returns its events too.
  mutating func send(
    _ id: UInt32, _ message: [UInt8], endStream: Bool = false
  ) -> (outcome: SendOutcome, events: [ConnectionEvent]) {
    var events: [ConnectionEvent] = []
    let outcome = sendMessage(streamID: id, message, endStream: endStream, events: &events)
    return (outcome, events)
  }

  /// (client) Opens a stream with the test method.
  mutating func open(endStream: Bool = false, metadata: Metadata = [:]) throws(OpenError) -> UInt32 {
    try openStream(RequestHead(method: testMethod, metadata: metadata), endStream: endStream)
  }
}
