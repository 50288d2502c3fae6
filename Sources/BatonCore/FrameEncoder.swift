/// Appends encoded frames to a byte array (PROTOCOL.md, "Frame header" and "Frame types").
///
/// The hot path (DATA, OPEN without metadata) writes straight into the caller's buffer with no
/// intermediate value; ``encode(_:into:)`` handles any ``Frame``.
public enum FrameEncoder {
  public static let headerLength = 9

  @inlinable
  static func appendHeader(
    _ buffer: inout [UInt8], length: Int, type: UInt8, flags: UInt8, streamID: UInt32
  ) {
    // The nine bytes in one append: one capacity check per frame instead of six.
    let id = streamID & StreamID.max
    let first8 =
      UInt64(truncatingIfNeeded: length & 0xFF_FFFF) << 40 | UInt64(type) << 32 | UInt64(flags) << 24
      | UInt64(id >> 8)
    var header = (first8.bigEndian, UInt8(truncatingIfNeeded: id))
    Swift.withUnsafeBytes(of: &header) { buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[..<9])) }
  }

  /// One DATA frame. The caller keeps `payload.count` within the peer's MAX_FRAME_SIZE.
  @inlinable
  public static func appendData(
    _ buffer: inout [UInt8], streamID: UInt32, payload: some Collection<UInt8>,
    endMessage: Bool, endStream: Bool
  ) {
    appendDataHeader(&buffer, streamID: streamID, length: payload.count, endMessage: endMessage, endStream: endStream)
    // Copied from borrowed storage: appending an Array retains and releases its buffer.
    if payload.withContiguousStorageIfAvailable({ buffer.append(contentsOf: $0) }) == nil {
      buffer.append(contentsOf: payload)
    }
  }

  /// The 9-byte header of a DATA frame whose payload the caller sends separately.
  @inlinable
  public static func appendDataHeader(
    _ buffer: inout [UInt8], streamID: UInt32, length: Int, endMessage: Bool, endStream: Bool
  ) {
    let flags = (endStream ? FrameFlags.endStream : 0) | (endMessage ? FrameFlags.endMessage : 0)
    appendHeader(&buffer, length: length, type: FrameType.data, flags: flags, streamID: streamID)
  }

  public static func appendOpen(
    _ buffer: inout [UInt8], streamID: UInt32, head: RequestHead, endStream: Bool
  ) {
    let method = head.method.utf8
    let length = 2 + method.count + 8 + metadataLength(head.metadata)
    appendHeader(
      &buffer, length: length, type: FrameType.open, flags: endStream ? FrameFlags.endStream : 0,
      streamID: streamID)
    buffer.appendInteger(UInt16(truncatingIfNeeded: method.count))
    buffer.append(contentsOf: method)
    buffer.appendInteger(head.timeoutMicroseconds)
    appendMetadata(&buffer, head.metadata)
  }

  public static func appendHeaders(_ buffer: inout [UInt8], streamID: UInt32, metadata: Metadata) {
    appendHeader(
      &buffer, length: metadataLength(metadata), type: FrameType.headers, flags: 0, streamID: streamID)
    appendMetadata(&buffer, metadata)
  }

  public static func appendTrailers(_ buffer: inout [UInt8], streamID: UInt32, trailers: Trailers) {
    let message = trailers.message.utf8
    let length = 1 + 2 + message.count + metadataLength(trailers.metadata)
    appendHeader(&buffer, length: length, type: FrameType.trailers, flags: 0, streamID: streamID)
    buffer.append(trailers.status)
    buffer.appendInteger(UInt16(truncatingIfNeeded: message.count))
    buffer.append(contentsOf: message)
    appendMetadata(&buffer, trailers.metadata)
  }

  public static func appendReset(_ buffer: inout [UInt8], streamID: UInt32, code: ErrorCode) {
    appendHeader(&buffer, length: 4, type: FrameType.reset, flags: 0, streamID: streamID)
    buffer.appendInteger(code.rawValue)
  }

  public static func appendSettings(_ buffer: inout [UInt8], _ settings: [Frame.Setting]) {
    appendHeader(&buffer, length: 6 * settings.count, type: FrameType.settings, flags: 0, streamID: 0)
    for setting in settings {
      buffer.appendInteger(setting.id)
      buffer.appendInteger(setting.value)
    }
  }

  public static func appendPing(_ buffer: inout [UInt8], ack: Bool, payload: UInt64) {
    appendHeader(&buffer, length: 8, type: FrameType.ping, flags: ack ? FrameFlags.ack : 0, streamID: 0)
    buffer.appendInteger(payload)
  }

  public static func appendGoAway(
    _ buffer: inout [UInt8], lastStreamID: UInt32, code: ErrorCode, debug: String
  ) {
    let text = debug.utf8
    appendHeader(&buffer, length: 8 + text.count, type: FrameType.goAway, flags: 0, streamID: 0)
    buffer.appendInteger(lastStreamID & StreamID.max)
    buffer.appendInteger(code.rawValue)
    buffer.append(contentsOf: text)
  }

  public static func appendWindowUpdate(_ buffer: inout [UInt8], streamID: UInt32, increment: UInt32) {
    appendHeader(&buffer, length: 4, type: FrameType.windowUpdate, flags: 0, streamID: streamID)
    buffer.appendInteger(increment & StreamID.max)
  }

  /// (1.1) A stream's checkpoint (PROTOCOL.md 18.2).
  public static func appendCheckpoint(_ buffer: inout [UInt8], streamID: UInt32, consumed: UInt64, token: [UInt8]) {
    appendHeader(&buffer, length: 8 + token.count, type: FrameType.checkpoint, flags: 0, streamID: streamID)
    buffer.appendInteger(consumed)
    buffer.append(contentsOf: token)
  }

  /// Encodes any frame.
  public static func encode(_ frame: Frame, into buffer: inout [UInt8]) {
    switch frame {
    case .data(let id, let payload, let endMessage, let endStream):
      appendData(&buffer, streamID: id, payload: payload, endMessage: endMessage, endStream: endStream)
    case .open(let id, let head, let endStream):
      appendOpen(&buffer, streamID: id, head: head, endStream: endStream)
    case .headers(let id, let metadata):
      appendHeaders(&buffer, streamID: id, metadata: metadata)
    case .trailers(let id, let trailers):
      appendTrailers(&buffer, streamID: id, trailers: trailers)
    case .reset(let id, let code):
      appendReset(&buffer, streamID: id, code: code)
    case .settings(let settings):
      appendSettings(&buffer, settings)
    case .ping(let ack, let payload):
      appendPing(&buffer, ack: ack, payload: payload)
    case .goAway(let last, let code, let debug):
      appendGoAway(&buffer, lastStreamID: last, code: code, debug: debug)
    case .windowUpdate(let id, let increment):
      appendWindowUpdate(&buffer, streamID: id, increment: increment)
    case .checkpoint(let id, let consumed, let token):
      appendCheckpoint(&buffer, streamID: id, consumed: consumed, token: token)
    }
  }

  /// Encoded size of a metadata block: the number the peer's MAX_METADATA_SIZE bounds.
  public static func metadataLength(_ metadata: Metadata) -> Int {
    var length = 2
    for entry in metadata.entries { length += 4 + entry.name.utf8.count + entry.value.utf8.count }
    return length
  }

  static func appendMetadata(_ buffer: inout [UInt8], _ metadata: Metadata) {
    buffer.appendInteger(UInt16(truncatingIfNeeded: metadata.count))
    for entry in metadata.entries {
      buffer.appendInteger(UInt16(truncatingIfNeeded: entry.name.utf8.count))
      buffer.append(contentsOf: entry.name.utf8)
      buffer.appendInteger(UInt16(truncatingIfNeeded: entry.value.utf8.count))
      buffer.append(contentsOf: entry.value.utf8)
    }
  }
}

extension Array where Element == UInt8 {
  /// Appends `value` big-endian.
  @inlinable
  mutating func appendInteger<T: FixedWidthInteger>(_ value: T) {
    var bigEndian = value.bigEndian
    Swift.withUnsafeBytes(of: &bigEndian) { self.append(contentsOf: $0) }
  }
}
