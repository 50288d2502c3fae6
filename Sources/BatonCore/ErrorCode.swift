/// A wire error code, carried by RESET and GOAWAY (PROTOCOL.md, "Error codes").
///
/// A struct rather than an enum so that codes this version does not know still round-trip; receivers
/// treat an unknown code like ``internalError``.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public var rawValue: UInt32
  public init(rawValue: UInt32) { self.rawValue = rawValue }

  public static let noError = ErrorCode(rawValue: 0)
  public static let protocolError = ErrorCode(rawValue: 1)
  public static let internalError = ErrorCode(rawValue: 2)
  public static let flowControlError = ErrorCode(rawValue: 3)
  public static let streamClosed = ErrorCode(rawValue: 4)
  public static let frameSizeError = ErrorCode(rawValue: 5)
  /// The stream was not processed at all: the one code that makes any call safe to retry elsewhere.
  public static let refusedStream = ErrorCode(rawValue: 6)
  public static let cancel = ErrorCode(rawValue: 7)
  public static let enhanceYourCalm = ErrorCode(rawValue: 8)
  public static let messageTooLarge = ErrorCode(rawValue: 9)
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
