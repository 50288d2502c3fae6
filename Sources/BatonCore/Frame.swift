/// One Baton frame, decoded (PROTOCOL.md, "Frame types").
///
/// The codec turns bytes into these values and back; it knows nothing of connection state, which is
/// ``ConnectionCore``'s job.
public enum Frame: Hashable, Sendable {
  case data(streamID: UInt32, payload: [UInt8], endMessage: Bool, endStream: Bool)
  case open(streamID: UInt32, RequestHead, endStream: Bool)
  case headers(streamID: UInt32, Metadata)
  case trailers(streamID: UInt32, Trailers)
  case reset(streamID: UInt32, ErrorCode)
  case settings([Setting])
  case ping(ack: Bool, payload: UInt64)
  case goAway(lastStreamID: UInt32, ErrorCode, debug: String)
  case windowUpdate(streamID: UInt32, increment: UInt32)
  /// (1.1, resumption on) The server's checkpoint of a stream: `token` covers every response
  /// message sent before it; `consumed` request messages had been read (PROTOCOL.md 18.2).
  case checkpoint(streamID: UInt32, consumed: UInt64, token: [UInt8])

  /// One SETTINGS entry, in wire order.
  public struct Setting: Hashable, Sendable {
    public var id: UInt16
    public var value: UInt32
    public init(id: UInt16, value: UInt32) {
      self.id = id
      self.value = value
    }
  }
}

/// The type byte of each frame (PROTOCOL.md, "Frame types").
public enum FrameType {
  public static let data: UInt8 = 0x0
  public static let open: UInt8 = 0x1
  public static let headers: UInt8 = 0x2
  public static let trailers: UInt8 = 0x3
  public static let reset: UInt8 = 0x4
  public static let settings: UInt8 = 0x5
  public static let ping: UInt8 = 0x6
  public static let goAway: UInt8 = 0x7
  public static let windowUpdate: UInt8 = 0x8
  /// 1.1, sent only with resumption on (PROTOCOL.md 18).
  public static let checkpoint: UInt8 = 0x9
}

/// Flag bits; their meaning depends on the frame type.
public enum FrameFlags {
  public static let endStream: UInt8 = 0x1
  public static let endMessage: UInt8 = 0x2
  public static let ack: UInt8 = 0x1
}

/// What an OPEN frame carries: which method, until when, and the caller's metadata.
public struct RequestHead: Hashable, Sendable {
  public var method: String
  /// Relative deadline in microseconds from receipt; 0 means none.
  public var timeoutMicroseconds: UInt64
  public var metadata: Metadata

  public init(method: String, timeoutMicroseconds: UInt64 = 0, metadata: Metadata = [:]) {
    self.method = method
    self.timeoutMicroseconds = timeoutMicroseconds
    self.metadata = metadata
  }
}

/// What a TRAILERS frame carries: the call's final status.
public struct Trailers: Hashable, Sendable {
  /// gRPC's numbering: 0 is OK (``RPCError/Code``).
  public var status: UInt8
  public var message: String
  public var metadata: Metadata

  public init(status: UInt8, message: String = "", metadata: Metadata = [:]) {
    self.status = status
    self.message = message
    self.metadata = metadata
  }
}

/// Stream-id rules shared by both sides.
public enum StreamID {
  /// The largest id; a GOAWAY with this last id means "stop opening streams, nothing refused yet".
  public static let max: UInt32 = 0x7FFF_FFFF
}

/// The 8 bytes each side sends first: "BATON\r\n" and the version.
public enum Preface {
  public static let magic: [UInt8] = Array("BATON\r\n".utf8)
  public static let version: UInt8 = 1
  public static let bytes: [UInt8] = magic + [version]
  public static let length = 8

  /// Checks a complete 8-byte preface.
  public static func validate(_ bytes: some Collection<UInt8>) throws(WireError) {
    guard bytes.count == length, bytes.prefix(magic.count).elementsEqual(magic) else {
      throw .connection(.protocolError, "not a Baton peer: the connection preface is wrong")
    }
    let version = bytes[bytes.index(bytes.startIndex, offsetBy: magic.count)]
    guard version == Preface.version else {
      throw .connection(
        .unsupportedVersion, "peer speaks Baton version \(version); this side speaks \(Preface.version)")
    }
  }
}
