/// One Baton connection's protocol state, without I/O: bytes in, events and bytes out.
///
/// The owner feeds received bytes to ``receive(_:into:)``, acts on the events, and writes
/// ``outbound`` to the socket (frame bytes, with large payloads by reference: see
/// ``OutboundBuffer``). Application actions (open a stream, send a message, reset,
/// GOAWAY) are methods that append frames to ``outbound``. All rules of PROTOCOL.md that depend on
/// connection state live here: stream ids, stream states, flow control, limits and GOAWAY.
public struct ConnectionCore: Sendable {
  public enum Role: Sendable, Hashable { case client, server }

  public enum Phase: Sendable, Hashable {
    case awaitingPreface
    case awaitingSettings
    case active
    /// A connection error happened; nothing more is read.
    case closed
  }

  public let role: Role
  public let localSettings: ConnectionSettings
  public private(set) var peerSettings: ConnectionSettings = .defaults
  public private(set) var phase: Phase = .awaitingPreface
  /// Bytes waiting to be written, in order. The owner takes them (for example by swapping in an
  /// empty buffer) and writes them to the socket.
  public var outbound = OutboundBuffer()

  /// (server) The highest stream id the client has opened: the last id a final GOAWAY names.
  public private(set) var highestPeerStreamID: UInt32 = 0
  /// (client) The id the next OPEN will use.
  public private(set) var nextStreamID: UInt32 = 1
  /// The lowest last id this side has sent in a GOAWAY.
  public private(set) var goAwaySent: UInt32?
  /// The lowest last id the peer has sent in a GOAWAY.
  public private(set) var goAwayReceived: UInt32?
  /// Non-ACK PINGs received so far (for keepalive policing by the owner).
  public private(set) var pingsReceived = 0
  /// How many more non-ACK PINGs this side will answer. The owner meters PINGs over time (a
  /// token bucket, PROTOCOL.md 15) and sets this before each ``receive(_:into:)``; the core
  /// enforces it frame by frame, so the PING that finds none left fails the connection
  /// (ENHANCE_YOUR_CALM) before it is answered, and nothing after it in the same read is processed.
  public var pingAllowance = Int.max

  private var decoder: FrameDecoder
  /// The last OPEN's method name, shared by the next OPEN for the same method (a server).
  private var recentMethod = ""
  /// Plain data only, so that reading or copying one costs no reference counting: this table is
  /// touched for every frame. The rare, heavy parts live beside it.
  private var streams = StreamTable<Stream>()
  /// Fragments of incomplete inbound messages, by stream.
  private var partials = StreamTable<[UInt8]>()
  /// The rest of outbound messages waiting for flow-control credit, by stream.
  private var pendings = StreamTable<PendingSend>()
  private var connectionSendWindow: Int
  private var connectionReceiveWindow: Int
  private var connectionUnacked = 0
  /// Early credit of delivered messages whose stream ended before the application consumed
  /// them (the application still reports them consumed, once).
  private var orphanedCredit: [UInt32: Int] = [:]
  /// Streams with a message waiting for connection-level credit, oldest first (may hold stale ids).
  private var blockedOnConnection: [UInt32] = []

  private struct Stream {
    var machine: StreamStateMachine
    var sendWindow: Int
    var receiveWindow: Int
    var receiveUnacked = 0
    /// (client) Whether HEADERS or DATA arrived yet: HEADERS must come first.
    var receivedResponse = false
    /// Bytes of delivered messages whose credit was already returned while they were buffered
    /// as fragments; ``consumed(streamID:bytes:)`` does not return them twice.
    var precredited = 0
    /// Early credit of the fragments of the message still being reassembled.
    var fragmentCredit = 0
    /// (server) HEADERS were sent: at most once.
    var sentHeaders = false
    /// (server, resumption on) A CHECKPOINT went out: the client can resume the stream.
    var checkpointed = false
  }

  private struct PendingSend {
    var bytes: [UInt8]
    var offset: Int
    var endStream: Bool
    /// (server) The checkpoint that follows the bytes (it covers them), before any status.
    var checkpoint: (consumed: UInt64, token: [UInt8])? = nil
    /// (server) The status to send once the bytes are out.
    var trailers: Trailers? = nil
  }

  public init(role: Role, settings: ConnectionSettings = .defaults) {
    self.role = role
    self.localSettings = settings
    self.decoder = FrameDecoder(settings: settings)
    self.connectionSendWindow = Int(ConnectionSettings.defaults.connectionWindowSize)
    self.connectionReceiveWindow = Int(settings.connectionWindowSize)
    outbound.reserveCapacity(256)
    outbound.frameBytes.append(contentsOf: Preface.bytes)
    FrameEncoder.appendSettings(&outbound.frameBytes, settings.wirePairs.map { Frame.Setting(id: $0.0, value: $0.1) })
  }

  // MARK: - Queries

  /// Streams currently open (not yet ended by TRAILERS or RESET).
  public var openStreamCount: Int { streams.count }
  public var openStreamIDs: [UInt32] { streams.keysArray }
  public func isOpen(_ streamID: UInt32) -> Bool { streams[streamID] != nil }
  /// (server) The stream's status is queued behind a message waiting for credit: it ends on its own.
  public func isEnding(_ streamID: UInt32) -> Bool { pendings[streamID]?.trailers != nil }

  /// Whether protocol 1.1's resumable streams are on: both sides announced RESUMPTION
  /// (PROTOCOL.md 18.1).
  public var resumptionOn: Bool {
    phase == .active && localSettings.resumption && peerSettings.resumption
  }

  /// (client) Whether ``openStream(_:endStream:)`` would succeed now.
  public var canOpenStream: Bool {
    role == .client && phase == .active && goAwayReceived == nil && goAwaySent == nil
      && streams.count < Int(peerSettings.maxConcurrentStreams) && nextStreamID <= StreamID.max
  }

  // MARK: - Input

  /// Processes as many whole frames of `bytes` as there are and returns how many bytes it used;
  /// the owner keeps the rest and calls again when more arrive. A message that came in one frame
  /// is reported in place (``ConnectionEvent/messageBytes(streamID:_:)``): the owner copies it out
  /// of `bytes` before reusing them.
  public mutating func receive(
    _ bytes: UnsafeRawBufferPointer, into events: inout [ConnectionEvent]
  ) -> Int {
    var consumed = 0
    while phase != .closed {
      let rest = UnsafeRawBufferPointer(rebasing: bytes[consumed...])
      if phase == .awaitingPreface {
        // Judge a wrong preface as soon as the bytes disagree, not only once 8 have arrived.
        let seen = min(rest.count, Preface.magic.count)
        guard rest.prefix(seen).elementsEqual(Preface.magic.prefix(seen)) else {
          fail(.connection(.protocolError, "not a Baton peer: the connection preface is wrong"), &events)
          break
        }
        guard rest.count >= Preface.length else { break }
        do {
          try Preface.validate(rest.prefix(Preface.length))
        } catch {
          fail(error, &events)
          break
        }
        consumed += Preface.length
        phase = .awaitingSettings
        continue
      }
      if phase == .active, let data = decoder.wholeData(rest) {
        // The usual frame, decoded without copying its payload (see `messageBytes`).
        let payload = (consumed + data.payload.lowerBound)..<(consumed + data.payload.upperBound)
        consumed = payload.upperBound
        receiveData(data.streamID, bytes, payload, endMessage: data.endMessage, endStream: data.endStream, &events)
        continue
      }
      let result: FrameDecoder.Outcome
      do {
        result = try decoder.decode(rest, recentMethod: &recentMethod)
      } catch {
        fail(error, &events)
        break
      }
      // Consumed, like the frame and its payload below: a message's bytes then move into its
      // event without a retain and release per frame.
      switch consume result {
      case .needMore:
        return consumed
      case .frame(let frame, let used):
        consumed += used
        handle(frame, &events)
      case .streamError(let error, let used):
        consumed += used
        if phase == .awaitingSettings {
          fail(.connection(.protocolError, "the first frame must be SETTINGS"), &events)
        } else {
          handleStreamError(error, &events)
        }
      }
    }
    return consumed
  }

  private mutating func handle(_ frame: consuming Frame, _ events: inout [ConnectionEvent]) {
    if phase == .awaitingSettings {
      guard case .settings(let pairs) = frame else {
        return fail(.connection(.protocolError, "the first frame must be SETTINGS"), &events)
      }
      peerSettings = ConnectionSettings(wirePairs: pairs.map { ($0.id, $0.value) })
      connectionSendWindow = Int(peerSettings.connectionWindowSize)
      phase = .active
      events.append(.ready(peerSettings))
      return
    }
    switch consume frame {
    case .data:
      // DATA is taken in place before decoding (see `receive`): `wholeData` accepts every DATA
      // frame `decode` does, so this is never reached.
      fail(.connection(.internalError, "a DATA frame missed the in-place path"), &events)
    case .open(let id, let head, let endStream):
      receiveOpen(id, head, endStream: endStream, &events)
    case .headers(let id, let metadata):
      receiveHeaders(id, metadata, &events)
    case .trailers(let id, let trailers):
      guard role == .client else {
        if isIdle(id) { return ignoreOrFailIdle(id, "TRAILERS", &events) }
        return resetFromRule(id, .protocolError, "a client must not send TRAILERS", &events)
      }
      let midMessage = partials[id] != nil
      guard removeStream(id) != nil else { return ignoreOrFailIdle(id, "TRAILERS", &events) }
      if midMessage {
        // The call ended inside a message: the reply is incomplete, so the call fails.
        return events.append(
          .streamReset(
            streamID: id, .protocolError, reason: "TRAILERS arrived inside an incomplete message", byPeer: false))
      }
      events.append(.trailers(streamID: id, trailers))
    case .reset(let id, let code):
      guard removeStream(id) != nil else { return ignoreOrFailIdle(id, "RESET", &events) }
      events.append(.streamReset(streamID: id, code, reason: "the peer reset the stream (\(code))", byPeer: true))
    case .settings:
      fail(.connection(.protocolError, "SETTINGS may be sent only once"), &events)
    case .ping(let ack, let payload):
      if ack {
        events.append(.pingAck(payload))
      } else if pingAllowance <= 0 {
        fail(.connection(.enhanceYourCalm, "too many pings"), &events)
      } else {
        pingAllowance -= 1
        pingsReceived += 1
        FrameEncoder.appendPing(&outbound.frameBytes, ack: true, payload: payload)
      }
    case .goAway(let last, let code, let debug):
      receiveGoAway(last, code, debug, &events)
    case .windowUpdate(let id, let increment):
      receiveWindowUpdate(id, Int(increment), &events)
    case .checkpoint(let id, let consumed, let token):
      receiveCheckpoint(id, consumed, token, &events)
    }
  }

  private mutating func receiveCheckpoint(
    _ id: UInt32, _ consumed: UInt64, _ token: [UInt8], _ events: inout [ConnectionEvent]
  ) {
    guard resumptionOn else {
      return fail(.connection(.protocolError, "CHECKPOINT while resumption is off"), &events)
    }
    guard role == .client else {
      if isIdle(id) { return ignoreOrFailIdle(id, "CHECKPOINT", &events) }
      return resetFromRule(id, .protocolError, "a client must not send CHECKPOINT", &events)
    }
    guard streams[id] != nil else { return ignoreOrFailIdle(id, "CHECKPOINT", &events) }
    events.append(.checkpoint(streamID: id, consumed: consumed, token: token))
  }

  private func isIdle(_ id: UInt32) -> Bool {
    role == .server ? id > highestPeerStreamID : id >= nextStreamID
  }

  /// Frames cross in flight, so one for a stream this side already closed is dropped quietly; one
  /// for a stream that was never opened means the peer is broken.
  private mutating func ignoreOrFailIdle(_ id: UInt32, _ what: String, _ events: inout [ConnectionEvent]) {
    if isIdle(id) {
      fail(.connection(.protocolError, "\(what) on stream \(id), which was never opened"), &events)
    }
  }

  private mutating func receiveOpen(
    _ id: UInt32, _ head: RequestHead, endStream: Bool, _ events: inout [ConnectionEvent]
  ) {
    guard admitOpen(id, &events) else { return }
    if let last = goAwaySent, id > last {
      // Above the final GOAWAY's last id: say explicitly that it was not processed.
      FrameEncoder.appendReset(&outbound.frameBytes, streamID: id, code: .refusedStream)
      return
    }
    guard streams.count < Int(localSettings.maxConcurrentStreams) else {
      FrameEncoder.appendReset(&outbound.frameBytes, streamID: id, code: .refusedStream)
      return
    }
    streams[id] = Stream(
      machine: .openedRemotely(endStream: endStream), sendWindow: Int(peerSettings.initialWindowSize),
      receiveWindow: Int(localSettings.initialWindowSize))
    events.append(.opened(streamID: id, head, endStream: endStream))
  }

  /// Applies the id rules to an OPEN, even a malformed one, so that ids keep growing.
  private mutating func admitOpen(_ id: UInt32, _ events: inout [ConnectionEvent]) -> Bool {
    guard role == .server else {
      fail(.connection(.protocolError, "a server must not open streams"), &events)
      return false
    }
    guard id > highestPeerStreamID else {
      fail(
        .connection(
          .protocolError, "stream id went backwards: OPEN \(id) after \(highestPeerStreamID)"), &events)
      return false
    }
    highestPeerStreamID = id
    return true
  }

  private mutating func receiveHeaders(_ id: UInt32, _ metadata: Metadata, _ events: inout [ConnectionEvent]) {
    guard role == .client else {
      if isIdle(id) { return ignoreOrFailIdle(id, "HEADERS", &events) }
      return resetFromRule(id, .protocolError, "a client must not send HEADERS", &events)
    }
    guard var stream = streams[id] else { return ignoreOrFailIdle(id, "HEADERS", &events) }
    guard !stream.receivedResponse else {
      return resetFromRule(id, .protocolError, "HEADERS after the response had begun", &events)
    }
    stream.receivedResponse = true
    streams[id] = stream
    events.append(.headers(streamID: id, metadata))
  }

  /// A DATA frame whose payload is `bytes[payload]`.
  private mutating func receiveData(
    _ id: UInt32, _ bytes: UnsafeRawBufferPointer, _ payload: Range<Int>, endMessage: Bool, endStream: Bool,
    _ events: inout [ConnectionEvent]
  ) {
    let length = payload.count
    guard length <= connectionReceiveWindow else {
      return fail(
        .connection(
          .flowControlError, "DATA of \(length) bytes exceeds the connection window \(connectionReceiveWindow)"),
        &events)
    }
    connectionReceiveWindow -= length
    guard var stream = streams[id] else {
      if isIdle(id) {
        return fail(.connection(.protocolError, "DATA on stream \(id), which was never opened"), &events)
      }
      // A closed stream: drop the bytes but give the connection credit back at once.
      return returnConnectionCredit(length)
    }
    guard length <= stream.receiveWindow else {
      returnConnectionCredit(length)
      return resetRemoved(
        id, stream, .flowControlError, "DATA of \(length) bytes exceeds the stream window \(stream.receiveWindow)",
        &events)
    }
    stream.receiveWindow -= length
    guard stream.machine.canReceive else {
      returnConnectionCredit(length)
      return resetRemoved(id, stream, .streamClosed, "DATA after the peer ended its side of the stream", &events)
    }
    if role == .client && endStream {
      returnConnectionCredit(length)
      return resetRemoved(id, stream, .protocolError, "a server ends a stream with TRAILERS, not END_STREAM", &events)
    }
    stream.receivedResponse = true
    if endMessage && !endStream && length <= Int(localSettings.maxMessageSize)
      && (partials.isEmpty || partials[id] == nil)
    {
      // The usual frame: one whole message, nothing buffered before it.
      stream.precredited += stream.fragmentCredit
      stream.fragmentCredit = 0
      streams[id] = stream
      events.append(.messageBytes(streamID: id, payload))
      return
    }

    let fragment = UnsafeRawBufferPointer(rebasing: bytes[payload])
    var message: [UInt8]? = nil
    var partial: [UInt8]? = partials.isEmpty ? nil : partials.removeValue(forKey: id)
    if var fragments = partial.take() {
      fragments.append(contentsOf: fragment)
      if endMessage { message = fragments } else { partial = fragments }
    } else if endMessage {
      message = Array(fragment)
    } else if length > 0 {
      partial = Array(fragment)
    }
    let buffered = (message?.count ?? 0) + (partial?.count ?? 0)
    let tooLarge = buffered > Int(localSettings.maxMessageSize)
    if tooLarge || (endStream && partial != nil) {
      // The fragments were credited as they came; this frame's bytes go back now.
      stream.fragmentCredit = 0
      returnConnectionCredit(length)
      return tooLarge
        ? resetRemoved(
          id, stream, .messageTooLarge, "a message exceeds MAX_MESSAGE_SIZE \(localSettings.maxMessageSize)", &events)
        : resetRemoved(id, stream, .protocolError, "END_STREAM inside an incomplete message", &events)
    }
    if message == nil && length > 0 {
      // A fragment: its credit goes back now, so that a message larger than the window can
      // arrive at all (its size is bounded by MAX_MESSAGE_SIZE instead). The application will
      // report the whole message consumed later; that part is then not returned twice.
      stream.fragmentCredit += length
      returnConnectionCredit(length)
      creditStream(id, &stream, length)
    } else if let message {
      // Whatever its fragments were credited early is not returned again when it is consumed.
      stream.precredited += stream.fragmentCredit
      stream.fragmentCredit = 0
      events.append(.message(streamID: id, message))
    } else {
      returnConnectionCredit(length)  // an empty frame or a pure half-close: nothing to consume
    }
    if endStream {
      do {
        try stream.machine.receiveEndStream()
      } catch {
        return resetRemoved(id, stream, .streamClosed, "END_STREAM twice", &events)
      }
      events.append(.endOfInput(streamID: id))
    }
    if stream.machine.state != .closed {
      streams[id] = stream
      if let partial { partials[id] = partial }
    } else {
      streams[id] = nil
    }
  }

  /// RESETs a stream whose changed copy is `stream` (see `resetFromRule`).
  private mutating func resetRemoved(
    _ id: UInt32, _ stream: Stream, _ code: ErrorCode, _ reason: String, _ events: inout [ConnectionEvent]
  ) {
    streams[id] = nil
    partials[id] = nil
    pendings[id] = nil
    if stream.precredited > 0 { orphanedCredit[id] = stream.precredited }
    FrameEncoder.appendReset(&outbound.frameBytes, streamID: id, code: code)
    events.append(.streamReset(streamID: id, code, reason: reason, byPeer: false))
  }

  private mutating func receiveGoAway(
    _ last: UInt32, _ code: ErrorCode, _ debug: String, _ events: inout [ConnectionEvent]
  ) {
    let effective = min(last, goAwayReceived ?? last)
    goAwayReceived = effective
    if role == .client {
      // Streams above the last id were never processed: report them refused, safe to retry.
      for id in streams.keysArray.sorted() where id > effective {
        streams[id] = nil
        let why = debug.isEmpty ? "" : ": \(debug)"
        events.append(
          .streamReset(
            streamID: id, .refusedStream,
            reason: "not processed: the server sent GOAWAY with last stream \(effective)\(why)", byPeer: true))
      }
    }
    events.append(.goAway(lastStreamID: effective, code, debug: debug))
    if code != .noError {
      // The peer declared the connection failed (PROTOCOL.md 11.2): nothing more is processed
      // or sent, and what is still open ends as "may have been processed".
      let why = debug.isEmpty ? "" : ": \(debug)"
      closeWithoutGoAway(.connection(code, "the peer failed the connection with GOAWAY \(code)\(why)"), &events)
    }
  }

  private mutating func receiveWindowUpdate(_ id: UInt32, _ increment: Int, _ events: inout [ConnectionEvent]) {
    if id == 0 {
      connectionSendWindow += increment
      guard connectionSendWindow <= Int(ConnectionSettings.maxWindow) else {
        return fail(.connection(.flowControlError, "connection window above 2^31-1"), &events)
      }
      let waiting = blockedOnConnection
      blockedOnConnection.removeAll(keepingCapacity: true)
      for (index, streamID) in waiting.enumerated() {
        guard connectionSendWindow > 0 else {
          // Credit ran out again: the rest keep waiting, oldest first.
          blockedOnConnection.append(contentsOf: waiting[index...].filter { pendings[$0] != nil })
          break
        }
        resumePending(streamID, &events)
      }
      return
    }
    guard var stream = streams[id] else { return ignoreOrFailIdle(id, "WINDOW_UPDATE", &events) }
    stream.sendWindow += increment
    guard stream.sendWindow <= Int(ConnectionSettings.maxWindow) else {
      return resetFromRule(id, .flowControlError, "stream window above 2^31-1", &events)
    }
    streams[id] = stream
    resumePending(id, &events)
  }

  private mutating func handleStreamError(_ error: WireError, _ events: inout [ConnectionEvent]) {
    guard case .stream(let id) = error.scope else { return fail(error, &events) }
    if error.frameType == FrameType.open {
      guard admitOpen(id, &events) else { return }
      FrameEncoder.appendReset(&outbound.frameBytes, streamID: id, code: error.code)
      return
    }
    if streams[id] == nil && isIdle(id) {
      return fail(.connection(.protocolError, "frame on stream \(id), which was never opened"), &events)
    }
    if error.frameType == FrameType.trailers && role == .client {
      // Even malformed, TRAILERS was the server's last frame on the stream: the call fails, and
      // no RESET follows, since the server already considers the stream closed (PROTOCOL.md 4.6).
      guard removeStream(id) != nil else { return }
      return events.append(.streamReset(streamID: id, error.code, reason: error.reason, byPeer: false))
    }
    resetFromRule(id, error.code, error.reason, &events)
  }

  /// The peer broke a stream rule: RESET it and report it, keep the connection.
  private mutating func resetFromRule(
    _ id: UInt32, _ code: ErrorCode, _ reason: String, _ events: inout [ConnectionEvent]
  ) {
    // A stream this side already closed gets nothing: the peer's frame crossed our end.
    guard removeStream(id) != nil else { return }
    FrameEncoder.appendReset(&outbound.frameBytes, streamID: id, code: code)
    events.append(.streamReset(streamID: id, code, reason: reason, byPeer: false))
  }

  private mutating func fail(_ error: WireError, _ events: inout [ConnectionEvent]) {
    guard phase != .closed else { return }
    // A last id never grows, even on an error GOAWAY after a graceful one.
    let last = min(role == .server ? highestPeerStreamID : 0, goAwaySent ?? .max)
    FrameEncoder.appendGoAway(&outbound.frameBytes, lastStreamID: last, code: error.code, debug: error.reason)
    goAwaySent = min(goAwaySent ?? last, last)
    closeWithoutGoAway(error, &events)
  }

  /// Stops processing and forgets every stream: the owner ends them and closes the socket.
  private mutating func closeWithoutGoAway(_ error: WireError, _ events: inout [ConnectionEvent]) {
    guard phase != .closed else { return }
    transportClosed()
    events.append(.connectionError(error))
  }

  // MARK: - Output

  public enum OpenError: Error, Hashable, Sendable {
    /// The peer's SETTINGS have not arrived yet.
    case notReady
    /// A GOAWAY was sent or received, the ids ran out, or the connection failed: use another.
    case goingAway
    /// The peer's MAX_CONCURRENT_STREAMS is reached: wait for a stream to end.
    case tooManyStreams
    /// The metadata block is larger than the peer's MAX_METADATA_SIZE.
    case metadataTooLarge(size: Int, limit: UInt32)
    /// The request message is larger than the peer's MAX_MESSAGE_SIZE.
    case messageTooLarge(size: Int, limit: UInt32)
    /// The OPEN frame (method and metadata) is larger than the peer's MAX_FRAME_SIZE.
    case frameTooLarge(size: Int, limit: UInt32)
    /// The method name is empty or longer than 65,535 bytes.
    case invalidMethod(length: Int)
  }

  /// (client) Opens a stream with OPEN and returns its id.
  public mutating func openStream(_ head: RequestHead, endStream: Bool) throws(OpenError) -> UInt32 {
    guard phase != .awaitingPreface && phase != .awaitingSettings else { throw .notReady }
    guard phase == .active, goAwayReceived == nil, goAwaySent == nil, nextStreamID <= StreamID.max,
      role == .client
    else { throw .goingAway }
    guard streams.count < Int(peerSettings.maxConcurrentStreams) else { throw .tooManyStreams }
    let methodLength = head.method.utf8.count
    guard (1...Int(UInt16.max)).contains(methodLength) else { throw .invalidMethod(length: methodLength) }
    let metadataSize = FrameEncoder.metadataLength(head.metadata)
    guard metadataSize <= Int(peerSettings.maxMetadataSize) else {
      throw .metadataTooLarge(size: metadataSize, limit: peerSettings.maxMetadataSize)
    }
    let frameSize = 2 + methodLength + 8 + metadataSize
    guard frameSize <= Int(peerSettings.maxFrameSize) else {
      throw .frameTooLarge(size: frameSize, limit: peerSettings.maxFrameSize)
    }
    let id = nextStreamID
    nextStreamID += 2
    FrameEncoder.appendOpen(&outbound.frameBytes, streamID: id, head: head, endStream: endStream)
    streams[id] = Stream(
      machine: .openedLocally(endStream: endStream), sendWindow: Int(peerSettings.initialWindowSize),
      receiveWindow: Int(localSettings.initialWindowSize))
    return id
  }

  public enum SendOutcome: Hashable, Sendable {
    /// All of the message is in ``outbound``.
    case written
    /// Part of it waits for flow-control credit; a ``ConnectionEvent/writable(streamID:)`` follows
    /// once it is all written. Send nothing more on this stream until then.
    case blocked
    /// The stream has ended (or this side already ended its half): nothing was written.
    case streamClosed
    /// The message is larger than the peer's MAX_MESSAGE_SIZE: nothing was written.
    case tooLarge(limit: UInt32)
  }

  /// Sends one message on a stream, fragmenting it to the peer's MAX_FRAME_SIZE and to the
  /// flow-control windows. `endStream` ends this side of the stream after it (client only; a
  /// server ends with ``sendTrailers(streamID:_:)``).
  public mutating func sendMessage(
    streamID id: UInt32, _ message: [UInt8], endStream: Bool = false, events: inout [ConnectionEvent]
  ) -> SendOutcome {
    guard let stream = streams[id], stream.machine.canSend, pendings.isEmpty || pendings[id] == nil
    else { return .streamClosed }
    guard message.count <= Int(peerSettings.maxMessageSize) else {
      return .tooLarge(limit: peerSettings.maxMessageSize)
    }
    let endStream = endStream && role == .client
    // Fast path: the whole message fits in one frame and both windows.
    if message.count <= Int(peerSettings.maxFrameSize) && message.count <= stream.sendWindow
      && message.count <= connectionSendWindow
    {
      outbound.appendData(streamID: id, payload: message, endMessage: true, endStream: endStream)
      connectionSendWindow -= message.count
      streams.update(id) { stream in
        stream.sendWindow -= message.count
        if endStream { _ = stream.machine.sendEndStream() }
      }
      return .written
    }
    pendings[id] = PendingSend(bytes: message, offset: 0, endStream: endStream)
    return writePending(id) ? .written : .blocked
  }

  /// (client) Ends this side of the stream with an empty END_STREAM DATA frame.
  public mutating func sendEnd(streamID id: UInt32) {
    guard role == .client, var stream = streams[id], stream.machine.canSend else { return }
    if var pending = pendings[id] {
      pending.endStream = true
      pendings[id] = pending
      return
    }
    FrameEncoder.appendData(
      &outbound.frameBytes, streamID: id, payload: EmptyCollection(), endMessage: false, endStream: true)
    _ = stream.machine.sendEndStream()
    streams[id] = stream
  }

  /// (server) The response metadata; at most once, before any message. Metadata larger than
  /// the client accepts (MAX_METADATA_SIZE, MAX_FRAME_SIZE) is not sent: the call ends with
  /// RESOURCE_EXHAUSTED instead, and this returns false.
  @discardableResult
  public mutating func sendHeaders(streamID id: UInt32, _ metadata: Metadata) -> Bool {
    guard role == .server, var stream = streams[id], !stream.sentHeaders else { return false }
    let size = FrameEncoder.metadataLength(metadata)
    guard size <= Int(peerSettings.maxMetadataSize), size <= Int(peerSettings.maxFrameSize) else {
      cutStream(
        streamID: id,
        Trailers(status: 8, message: "response metadata of \(size) bytes exceeds the client's limit"),
        because: .error)
      return false
    }
    stream.sentHeaders = true
    streams[id] = stream
    FrameEncoder.appendHeaders(&outbound.frameBytes, streamID: id, metadata: metadata)
    return true
  }

  /// Trailers that fit the client's limits: metadata that is too large becomes a
  /// RESOURCE_EXHAUSTED status without metadata; a long message is cut at a character boundary.
  private func fitted(_ trailers: Trailers) -> Trailers {
    var trailers = trailers
    let limit = min(Int(peerSettings.maxFrameSize), Int(UInt16.max) + 3)
    if FrameEncoder.metadataLength(trailers.metadata) > Int(peerSettings.maxMetadataSize)
      || 3 + FrameEncoder.metadataLength(trailers.metadata) > limit
    {
      trailers = Trailers(status: 8, message: "trailing metadata exceeds the client's limit")
    }
    let room = limit - 3 - FrameEncoder.metadataLength(trailers.metadata)
    if trailers.message.utf8.count > room {
      var cut = ""
      var used = 0
      for character in trailers.message {
        let size = character.utf8.count
        guard used + size <= room else { break }
        cut.append(character)
        used += size
      }
      trailers.message = cut
    }
    return trailers
  }

  /// (server) Ends the stream with a status. A message still waiting for flow-control credit
  /// goes first and the status follows it (the stream stays open until then).
  /// Returns false if the stream had already ended or already has its status.
  @discardableResult
  public mutating func sendTrailers(streamID id: UInt32, _ trailers: Trailers) -> Bool {
    guard streams[id] != nil else { return false }
    let trailers = fitted(trailers)
    if var pending = pendings[id] {
      guard pending.trailers == nil else { return false }
      pending.trailers = trailers
      pendings[id] = pending
      return true
    }
    removeStream(id)
    FrameEncoder.appendTrailers(&outbound.frameBytes, streamID: id, trailers: trailers)
    return true
  }

  /// Why the server ends a stream at once (``cutStream(streamID:_:because:)``). It decides the
  /// end where TRAILERS may not be it: inside a partly sent response message (PROTOCOL.md 7.3),
  /// and on a stream the client can resume.
  public enum CutCause: Sendable {
    /// The call's deadline passed: TRAILERS, or RESET CANCEL inside a message (section 10).
    /// Resumable or not, the call is over.
    case callDeadline
    /// The server stops (its drain deadline passed, or at once) and closes the connection next:
    /// TRAILERS, or no frame at all inside a message or on a stream that has sent a CHECKPOINT.
    /// The close ends those for the client, which resumes a checkpointed one (13.2, 18.3).
    case stop
    /// The server's own error (response metadata the client cannot take): TRAILERS, or RESET
    /// INTERNAL_ERROR inside a message.
    case error
  }

  /// (server) Ends the stream at once, dropping a message still waiting for flow-control credit,
  /// as `cause` says. Returns false if the stream had already ended.
  @discardableResult
  public mutating func cutStream(streamID id: UInt32, _ trailers: Trailers, because cause: CutCause) -> Bool {
    let partlySent = (pendings[id]?.offset ?? 0) > 0
    guard let stream = removeStream(id) else { return false }
    switch cause {
    case .stop where partlySent || stream.checkpointed:
      break
    case .callDeadline where partlySent:
      FrameEncoder.appendReset(&outbound.frameBytes, streamID: id, code: .cancel)
    case .error where partlySent:
      FrameEncoder.appendReset(&outbound.frameBytes, streamID: id, code: .internalError)
    default:
      FrameEncoder.appendTrailers(&outbound.frameBytes, streamID: id, trailers: fitted(trailers))
    }
    return true
  }

  /// (server, resumption on) Marks a checkpoint of the stream: it covers every message sent on
  /// it so far, a message still waiting for credit included (the checkpoint then follows it).
  /// Returns false, sending nothing, when resumption is off or the stream has ended.
  @discardableResult
  public mutating func sendCheckpoint(streamID id: UInt32, consumed: UInt64, token: [UInt8]) -> Bool {
    guard role == .server, resumptionOn else { return false }
    if var pending = pendings[id] {  // a pending message belongs to an open stream
      guard pending.trailers == nil else { return false }
      pending.checkpoint = (consumed, token)
      pendings[id] = pending
      return true
    }
    guard streams.update(id, { $0.checkpointed = true }) != nil else { return false }
    FrameEncoder.appendCheckpoint(&outbound.frameBytes, streamID: id, consumed: consumed, token: token)
    return true
  }

  /// Ends a stream at once with RESET (a client's CANCEL, a server's refusal or error).
  /// Returns false if the stream had already ended.
  @discardableResult
  public mutating func resetStream(streamID id: UInt32, _ code: ErrorCode) -> Bool {
    guard removeStream(id) != nil else { return false }
    FrameEncoder.appendReset(&outbound.frameBytes, streamID: id, code: code)
    return true
  }

  /// The application took a delivered message of `bytes` bytes: return the credit, with a
  /// WINDOW_UPDATE once half a window has been consumed (PROTOCOL.md, "Flow control").
  public mutating func consumed(streamID id: UInt32, bytes: Int) {
    guard phase != .closed, bytes > 0 else { return }
    guard streams[id] != nil else {
      // The stream has ended; its delivered messages may still carry early credit.
      guard let orphan = orphanedCredit[id] else { return returnConnectionCredit(bytes) }
      let early = min(bytes, orphan)
      orphanedCredit[id] = orphan > early ? orphan - early : nil
      return returnConnectionCredit(bytes - early)
    }
    let owed =
      streams.update(id) { stream in
        let early = min(bytes, stream.precredited)
        stream.precredited -= early
        return bytes - early
      } ?? 0
    returnConnectionCredit(owed)
    let halfWindow = max(1, Int(localSettings.initialWindowSize) / 2)
    let increment =
      streams.update(id) { stream -> Int in
        guard owed > 0, stream.machine.canReceive else { return 0 }
        stream.receiveUnacked += owed
        guard stream.receiveUnacked >= halfWindow else { return 0 }
        let unacked = stream.receiveUnacked
        stream.receiveWindow += unacked
        stream.receiveUnacked = 0
        return unacked
      } ?? 0
    if increment > 0 {
      FrameEncoder.appendWindowUpdate(&outbound.frameBytes, streamID: id, increment: UInt32(increment))
    }
  }

  private mutating func creditStream(_ id: UInt32, _ stream: inout Stream, _ bytes: Int) {
    guard bytes > 0 else { return }
    stream.receiveUnacked += bytes
    if stream.receiveUnacked >= max(1, Int(localSettings.initialWindowSize) / 2) {
      FrameEncoder.appendWindowUpdate(&outbound.frameBytes, streamID: id, increment: UInt32(stream.receiveUnacked))
      stream.receiveWindow += stream.receiveUnacked
      stream.receiveUnacked = 0
    }
  }

  /// Forgets a stream. Fragments it was still buffering were credited when they arrived and
  /// are simply dropped; delivered messages not yet consumed keep their early credit on file.
  @discardableResult
  private mutating func removeStream(_ id: UInt32) -> Stream? {
    guard let stream = streams.removeValue(forKey: id) else { return nil }
    if !partials.isEmpty { partials[id] = nil }
    if !pendings.isEmpty { pendings[id] = nil }
    if stream.precredited > 0 { orphanedCredit[id] = stream.precredited }
    return stream
  }

  private mutating func returnConnectionCredit(_ bytes: Int) {
    guard bytes > 0 else { return }
    connectionUnacked += bytes
    if connectionUnacked >= max(1, Int(localSettings.connectionWindowSize) / 2) {
      FrameEncoder.appendWindowUpdate(&outbound.frameBytes, streamID: 0, increment: UInt32(connectionUnacked))
      connectionReceiveWindow += connectionUnacked
      connectionUnacked = 0
    }
  }

  /// Sends GOAWAY. The last id never grows: a later GOAWAY with a higher id is sent with the
  /// lower one. Streams are not touched: those at or below the id run on.
  public mutating func sendGoAway(lastStreamID: UInt32, _ code: ErrorCode = .noError, debug: String = "") {
    guard phase != .closed else { return }
    let last = min(lastStreamID, goAwaySent ?? lastStreamID)
    goAwaySent = last
    FrameEncoder.appendGoAway(&outbound.frameBytes, lastStreamID: last, code: code, debug: debug)
  }

  /// Sends a PING; the peer's ACK comes back as ``ConnectionEvent/pingAck(_:)``.
  public mutating func sendPing(_ payload: UInt64) {
    guard phase != .closed else { return }
    FrameEncoder.appendPing(&outbound.frameBytes, ack: false, payload: payload)
  }

  /// The socket under the connection is gone (EOF, reset, read or write error, closed): the
  /// connection is over without a frame. Afterwards no stream can open (``openStream(_:endStream:)``
  /// throws ``OpenError/goingAway``) and nothing is read or sent. The owner fails every stream it
  /// still tracks in the same step, so that a stream is either failed or never opened.
  public mutating func transportClosed() {
    guard phase != .closed else { return }
    phase = .closed
    streams.removeAll()
    partials.removeAll()
    pendings.removeAll()
    orphanedCredit.removeAll()
    blockedOnConnection.removeAll()
  }

  /// Ends the connection because of this side's own error (a GOAWAY with the code, then close).
  public mutating func abort(_ code: ErrorCode, reason: String, into events: inout [ConnectionEvent]) {
    fail(.connection(code, reason), &events)
  }

  // MARK: - Flow control

  /// Writes as much of a stream's pending message as the windows allow; true once it is all out.
  private mutating func writePending(_ id: UInt32) -> Bool {
    guard var stream = streams[id], var pending = pendings[id] else { return true }
    let maxFrame = Int(peerSettings.maxFrameSize)
    while true {
      let remaining = pending.bytes.count - pending.offset
      let allowance = min(remaining, maxFrame, stream.sendWindow, connectionSendWindow)
      if remaining > 0 && allowance <= 0 {
        if connectionSendWindow <= 0 && stream.sendWindow > 0 { blockedOnConnection.append(id) }
        pendings[id] = pending
        streams[id] = stream
        return false
      }
      let end = pending.offset + allowance
      let last = end == pending.bytes.count
      outbound.appendData(
        streamID: id, payload: pending.bytes[pending.offset..<end], endMessage: last,
        endStream: last && pending.endStream)
      stream.sendWindow -= allowance
      connectionSendWindow -= allowance
      pending.offset = end
      if last {
        if pending.endStream { _ = stream.machine.sendEndStream() }
        pendings[id] = nil
        if let checkpoint = pending.checkpoint {
          FrameEncoder.appendCheckpoint(
            &outbound.frameBytes, streamID: id, consumed: checkpoint.consumed, token: checkpoint.token)
          stream.checkpointed = true
        }
        if let trailers = pending.trailers {
          streams[id] = stream
          removeStream(id)
          FrameEncoder.appendTrailers(&outbound.frameBytes, streamID: id, trailers: trailers)
        } else {
          streams[id] = stream
        }
        return true
      }
    }
  }

  private mutating func resumePending(_ id: UInt32, _ events: inout [ConnectionEvent]) {
    guard pendings[id] != nil else { return }
    if writePending(id) { events.append(.writable(streamID: id)) }
  }
}
