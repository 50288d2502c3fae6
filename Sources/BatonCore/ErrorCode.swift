/// A wire error code, carried by RESET and GOAWAY (PROTOCOL.md, "Error codes").
///
/// A struct rather than an enum so that codes this version does not know still round-trip; receivers
/// treat an unknown code like ``internalError``.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  /// The code as sent on the wire.
  public var rawValue: UInt32
  /// Any value, known or not (unknown ones are handled as ``internalError``).
  public init(rawValue: UInt32) { self.rawValue = rawValue }

  /// A graceful stop, or a close that blames no one.
  public static let noError = ErrorCode(rawValue: 0)
  /// The peer broke a rule of PROTOCOL.md.
  public static let protocolError = ErrorCode(rawValue: 1)
  /// The sender failed internally.
  public static let internalError = ErrorCode(rawValue: 2)
  /// The peer overran a flow-control window.
  public static let flowControlError = ErrorCode(rawValue: 3)
  /// DATA arrived after the peer had ended its side of the stream.
  public static let streamClosed = ErrorCode(rawValue: 4)
  /// A frame exceeded MAX_FRAME_SIZE or had a wrong fixed length.
  public static let frameSizeError = ErrorCode(rawValue: 5)
  /// The stream was not processed at all: the one code that makes any call safe to retry elsewhere.
  public static let refusedStream = ErrorCode(rawValue: 6)
  /// The stream is no longer wanted: the caller cancelled or its deadline passed.
  public static let cancel = ErrorCode(rawValue: 7)
  /// The peer generates excessive load (a ping flood, a frame dripped in too slowly, a full server).
  public static let enhanceYourCalm = ErrorCode(rawValue: 8)
  /// A message or metadata block exceeded the receiver's limit.
  public static let messageTooLarge = ErrorCode(rawValue: 9)
  /// The preface names a protocol version the receiver does not speak.
  public static let unsupportedVersion = ErrorCode(rawValue: 10)

  static let names: [String] = [
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "STREAM_CLOSED",
    "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "ENHANCE_YOUR_CALM", "MESSAGE_TOO_LARGE",
    "UNSUPPORTED_VERSION",
  ]

  /// The name PROTOCOL.md uses, e.g. `REFUSED_STREAM`; `UNKNOWN(0x2a)` for codes this version lacks.
  public var description: String {
    rawValue < Self.names.count ? Self.names[Int(rawValue)] : "UNKNOWN(0x\(String(rawValue, radix: 16)))"
  }

  /// Parses a name as written in PROTOCOL.md and the vectors.
  public init?(name: String) {
    guard let index = Self.names.firstIndex(of: name) else { return nil }
    self.init(rawValue: UInt32(index))
  }
}
