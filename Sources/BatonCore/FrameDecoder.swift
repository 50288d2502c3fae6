/// Decodes frames from the front of a byte buffer (PROTOCOL.md, "Frame types").
///
/// Stateless between frames: the caller keeps unconsumed bytes and calls again when more arrive
/// (and may keep the last method name, see ``decode(_:recentMethod:)``).
/// An oversized length is rejected from the 9-byte header alone, before any payload is buffered.
public struct FrameDecoder: Sendable {
  /// This side's MAX_FRAME_SIZE: larger frames are a connection FRAME_SIZE_ERROR.
  public var maxFrameSize: UInt32
  /// This side's MAX_METADATA_SIZE: larger blocks are a stream MESSAGE_TOO_LARGE.
  public var maxMetadataSize: UInt32

  public init(maxFrameSize: UInt32, maxMetadataSize: UInt32) {
    self.maxFrameSize = maxFrameSize
    self.maxMetadataSize = maxMetadataSize
  }

  public init(settings: ConnectionSettings) {
    self.init(maxFrameSize: settings.maxFrameSize, maxMetadataSize: settings.maxMetadataSize)
  }

  public enum Outcome: Hashable, Sendable {
    /// Not a whole frame yet.
    case needMore
    case frame(Frame, consumed: Int)
    /// A frame whose boundary is intact but whose payload breaks a stream-scoped rule: reset that
    /// stream, skip `consumed` bytes, keep the connection.
    case streamError(WireError, consumed: Int)
  }

  /// Where the first frame of `bytes` is a whole, valid DATA frame: its stream, flags, and the
  /// place of its payload in `bytes` (not copied). Nil for anything else, which
  /// ``decode(_:recentMethod:)`` then judges. For a caller that copies a payload once, straight
  /// to wherever its reader will take it, rather than into an array of its own first.
  public func wholeData(_ bytes: UnsafeRawBufferPointer) -> WholeData? {
    guard bytes.count >= FrameEncoder.headerLength, bytes[3] == FrameType.data else { return nil }
    let length = Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2])
    let streamID = bytes.loadBigEndian(UInt32.self, at: 5) & StreamID.max
    let total = FrameEncoder.headerLength + length
    guard length <= Int(maxFrameSize), bytes.count >= total, streamID != 0 else { return nil }
    let flags = bytes[4]
    return WholeData(
      streamID: streamID, payload: FrameEncoder.headerLength..<total,
      endMessage: flags & FrameFlags.endMessage != 0, endStream: flags & FrameFlags.endStream != 0)
  }

  /// A DATA frame found by ``wholeData(_:)``; the frame ends where its payload does.
  public struct WholeData: Hashable, Sendable {
    public var streamID: UInt32
    public var payload: Range<Int>
    public var endMessage: Bool
    public var endStream: Bool

    public init(streamID: UInt32, payload: Range<Int>, endMessage: Bool, endStream: Bool) {
      self.streamID = streamID
      self.payload = payload
      self.endMessage = endMessage
      self.endStream = endStream
    }
  }

  /// Decodes the first frame in `bytes`. Throws only connection-scoped errors.
  public func decode(_ bytes: UnsafeRawBufferPointer) throws(WireError) -> Outcome {
    var noRecentMethod = ""
    return try decode(bytes, recentMethod: &noRecentMethod)
  }

  /// Decodes the first frame in `bytes`, as ``decode(_:)``. An OPEN whose method name has the
  /// bytes of `recentMethod` shares that string instead of allocating and validating its own
  /// (a connection mostly calls a few methods over and over); any other OPEN's method becomes
  /// `recentMethod`. One string, so a peer that varies its methods costs nothing extra.
  public func decode(
    _ bytes: UnsafeRawBufferPointer, recentMethod: inout String
  ) throws(WireError) -> Outcome {
    guard bytes.count >= FrameEncoder.headerLength else { return .needMore }
    let length = Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2])
    let type = bytes[3]
    let flags = bytes[4]
    let streamID = bytes.loadBigEndian(UInt32.self, at: 5) & StreamID.max
    guard length <= Int(maxFrameSize) else {
      throw .connection(
        .frameSizeError, "frame of \(length) bytes exceeds MAX_FRAME_SIZE \(maxFrameSize)")
    }
    guard type <= FrameType.checkpoint else {
      throw .connection(.protocolError, "unknown frame type 0x\(String(type, radix: 16))")
    }
    let total = FrameEncoder.headerLength + length
    guard bytes.count >= total else { return .needMore }
    let payload = UnsafeRawBufferPointer(rebasing: bytes[FrameEncoder.headerLength..<total])
    do {
      let frame = try decodePayload(
        type: type, flags: flags, streamID: streamID, payload: payload, recentMethod: &recentMethod)
      return .frame(frame, consumed: total)
    } catch let error where error.scope != .connection {
      return .streamError(error, consumed: total)
    }
  }

  private func decodePayload(
    type: UInt8, flags: UInt8, streamID: UInt32, payload: UnsafeRawBufferPointer,
    recentMethod: inout String
  ) throws(WireError) -> Frame {
    let name = Self.typeNames[Int(type)]
    let onStream = type <= FrameType.reset || type == FrameType.checkpoint
    if onStream && streamID == 0 {
      throw .connection(.protocolError, "\(name) frame on stream 0")
    }
    if (type == FrameType.settings || type == FrameType.ping || type == FrameType.goAway)
      && streamID != 0
    {
      throw .connection(.protocolError, "\(name) frame on stream \(streamID); it belongs on stream 0")
    }
    func streamError(_ code: ErrorCode, _ reason: String) -> WireError {
      WireError(.stream(streamID), code, reason, frameType: type)
    }
    var cursor = ByteCursor(payload)

    switch type {
    case FrameType.data:
      return .data(
        streamID: streamID, payload: Array(payload),
        endMessage: flags & FrameFlags.endMessage != 0, endStream: flags & FrameFlags.endStream != 0)

    case FrameType.open:
      guard streamID & 1 == 1 else {
        throw .connection(.protocolError, "OPEN on even stream id \(streamID); client ids are odd")
      }
      guard let methodLength = cursor.u16(), methodLength > 0,
        let methodBytes = cursor.bytes(Int(methodLength)),
        let method = recentMethod.hasUTF8(methodBytes) ? recentMethod : String(validatingUTF8Bytes: methodBytes)
      else { throw streamError(.protocolError, "OPEN has a missing, empty or invalid method name") }
      recentMethod = method
      guard let timeout = cursor.u64() else { throw streamError(.protocolError, "OPEN is truncated") }
      let metadata = try decodeMetadata(&cursor, streamError)
      return .open(
        streamID: streamID, RequestHead(method: method, timeoutMicroseconds: timeout, metadata: metadata),
        endStream: flags & FrameFlags.endStream != 0)

    case FrameType.headers:
      return .headers(streamID: streamID, try decodeMetadata(&cursor, streamError))

    case FrameType.trailers:
      guard let status = cursor.u8(), let messageLength = cursor.u16(),
        let messageBytes = cursor.bytes(Int(messageLength)),
        let message = String(validatingUTF8Bytes: messageBytes)
      else { throw streamError(.protocolError, "TRAILERS is truncated or its message is not UTF-8") }
      let metadata = try decodeMetadata(&cursor, streamError)
      return .trailers(streamID: streamID, Trailers(status: status, message: message, metadata: metadata))

    case FrameType.reset:
      guard payload.count == 4, let code = cursor.u32() else {
        throw .connection(.frameSizeError, "RESET payload is \(payload.count) bytes, not 4")
      }
      return .reset(streamID: streamID, ErrorCode(rawValue: code))

    case FrameType.settings:
      guard payload.count % 6 == 0 else {
        throw .connection(.frameSizeError, "SETTINGS payload of \(payload.count) bytes is not a multiple of 6")
      }
      var settings: [Frame.Setting] = []
      while let id = cursor.u16(), let value = cursor.u32() {
        switch id {
        case SettingID.maxFrameSize where !ConnectionSettings.maxFrameSizeRange.contains(value):
          throw .connection(.protocolError, "MAX_FRAME_SIZE \(value) is outside 1024...16777215")
        case SettingID.initialWindowSize, SettingID.connectionWindowSize:
          guard value <= ConnectionSettings.maxWindow else {
            throw .connection(.protocolError, "window size \(value) exceeds 2^31-1")
          }
        case SettingID.maxMetadataSize where value < ConnectionSettings.minMetadataSize:
          throw .connection(.protocolError, "MAX_METADATA_SIZE \(value) is below \(ConnectionSettings.minMetadataSize)")
        case SettingID.resumption where value > 1:
          throw .connection(.protocolError, "RESUMPTION \(value) is neither 0 nor 1")
        case SettingID.maxFrameSize, SettingID.maxConcurrentStreams, SettingID.maxMetadataSize,
          SettingID.maxMessageSize, SettingID.resumption:
          break
        default:
          continue  // unknown ids are skipped so that settings can be added later
        }
        settings.append(Frame.Setting(id: id, value: value))
      }
      return .settings(settings)

    case FrameType.ping:
      guard payload.count == 8, let opaque = cursor.u64() else {
        throw .connection(.frameSizeError, "PING payload is \(payload.count) bytes, not 8")
      }
      return .ping(ack: flags & FrameFlags.ack != 0, payload: opaque)

    case FrameType.goAway:
      guard payload.count >= 8, let last = cursor.u32(), let code = cursor.u32() else {
        throw .connection(.frameSizeError, "GOAWAY payload is \(payload.count) bytes, fewer than 8")
      }
      let debug = String(decoding: cursor.rest(), as: UTF8.self)
      return .goAway(lastStreamID: last & StreamID.max, ErrorCode(rawValue: code), debug: debug)

    case FrameType.checkpoint:
      guard payload.count >= 8, let consumed = cursor.u64() else {
        throw .connection(.frameSizeError, "CHECKPOINT payload is \(payload.count) bytes, fewer than 8")
      }
      return .checkpoint(streamID: streamID, consumed: consumed, token: Array(cursor.rest()))

    default:  // FrameType.windowUpdate; the type was range-checked above
      guard payload.count == 4, let raw = cursor.u32() else {
        throw .connection(.frameSizeError, "WINDOW_UPDATE payload is \(payload.count) bytes, not 4")
      }
      let increment = raw & StreamID.max
      if increment == 0 {
        if streamID == 0 { throw .connection(.protocolError, "WINDOW_UPDATE with increment 0") }
        throw streamError(.protocolError, "WINDOW_UPDATE with increment 0")
      }
      return .windowUpdate(streamID: streamID, increment: increment)
    }
  }

  private func decodeMetadata(
    _ cursor: inout ByteCursor, _ streamError: (ErrorCode, String) -> WireError
  ) throws(WireError) -> Metadata {
    let blockLength = cursor.remaining
    guard blockLength <= Int(maxMetadataSize) else {
      throw streamError(
        .messageTooLarge, "metadata block of \(blockLength) bytes exceeds MAX_METADATA_SIZE \(maxMetadataSize)")
    }
    guard let count = cursor.u16() else { throw streamError(.protocolError, "metadata block is truncated") }
    var entries: [Metadata.Entry] = []
    entries.reserveCapacity(Int(count))
    for _ in 0..<count {
      guard let nameLength = cursor.u16(), let nameBytes = cursor.bytes(Int(nameLength)),
        let valueLength = cursor.u16(), let valueBytes = cursor.bytes(Int(valueLength))
      else { throw streamError(.protocolError, "metadata block is truncated") }
      guard Metadata.isValidName(nameBytes) else {
        throw streamError(.protocolError, "metadata name is empty or not lower-case [a-z0-9-_.]")
      }
      guard let value = String(validatingUTF8Bytes: valueBytes) else {
        throw streamError(.protocolError, "metadata value is not valid UTF-8")
      }
      entries.append(Metadata.Entry(name: String(decoding: nameBytes, as: UTF8.self), value: value))
    }
    guard cursor.remaining == 0 else {
      throw streamError(.protocolError, "\(cursor.remaining) bytes follow the metadata block")
    }
    return Metadata(entries)
  }

  static let typeNames = [
    "DATA", "OPEN", "HEADERS", "TRAILERS", "RESET", "SETTINGS", "PING", "GOAWAY", "WINDOW_UPDATE", "CHECKPOINT",
  ]
}

/// Reads big-endian integers from a payload without ever reading past it.
struct ByteCursor {
  let base: UnsafeRawBufferPointer
  var index = 0

  init(_ base: UnsafeRawBufferPointer) { self.base = base }

  var remaining: Int { base.count - index }

  mutating func u8() -> UInt8? {
    guard remaining >= 1 else { return nil }
    defer { index += 1 }
    return base[index]
  }
  mutating func u16() -> UInt16? { integer() }
  mutating func u32() -> UInt32? { integer() }
  mutating func u64() -> UInt64? { integer() }

  private mutating func integer<T: FixedWidthInteger>() -> T? {
    let size = MemoryLayout<T>.size
    guard remaining >= size else { return nil }
    defer { index += size }
    return base.loadBigEndian(T.self, at: index)
  }

  mutating func bytes(_ count: Int) -> UnsafeRawBufferPointer? {
    guard remaining >= count else { return nil }
    defer { index += count }
    return UnsafeRawBufferPointer(rebasing: base[index..<index + count])
  }

  mutating func rest() -> UnsafeRawBufferPointer {
    defer { index = base.count }
    return UnsafeRawBufferPointer(rebasing: base[index...])
  }
}

extension UnsafeRawBufferPointer {
  @inlinable
  func loadBigEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
    T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
  }
}

extension String {
  /// Strict UTF-8 decoding: nil rather than repair, because the wire must not carry invalid text.
  init?(validatingUTF8Bytes bytes: UnsafeRawBufferPointer) {
    // ASCII (method names, most status messages and metadata, and the empty message of every
    // OK status) is valid as it stands; the generic validating initializer costs 70-110 ns
    // even for an empty string, this path 18-55 ns.
    if bytes.allSatisfy({ $0 < 0x80 }) {
      self = String(decoding: bytes, as: UTF8.self)
      return
    }
    guard let string = String(validating: bytes, as: UTF8.self) else { return nil }
    self = string
  }

  /// Whether this string's UTF-8 is exactly `bytes`.
  func hasUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard utf8.count == bytes.count else { return false }
    let equal = utf8.withContiguousStorageIfAvailable { UnsafeRawBufferPointer($0).hasSameBytes(as: bytes) }
    return equal ?? utf8.elementsEqual(bytes)
  }
}

extension UnsafeRawBufferPointer {
  /// Byte equality eight bytes at a time (the generic `elementsEqual` goes a byte at a time
  /// through an iterator: about 1 % of a server's time per unary call, for the method name).
  func hasSameBytes(as other: UnsafeRawBufferPointer) -> Bool {
    guard count == other.count else { return false }
    var offset = 0
    while offset + 8 <= count {
      guard
        loadUnaligned(fromByteOffset: offset, as: UInt64.self)
          == other.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
      else { return false }
      offset += 8
    }
    while offset < count {
      guard self[offset] == other[offset] else { return false }
      offset += 1
    }
    return true
  }
}
