import BatonCore
import Testing

@Suite("ErrorCode")
struct ErrorCodeTests {
  static let names = [
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "STREAM_CLOSED", "FRAME_SIZE_ERROR",
    "REFUSED_STREAM", "CANCEL", "ENHANCE_YOUR_CALM", "MESSAGE_TOO_LARGE", "UNSUPPORTED_VERSION",
  ]

  @Test("every name of PROTOCOL.md section 11.1 parses to its number and prints back", arguments: names.indices)
  func parsesNames(_ index: Int) throws {
    let code = try #require(ErrorCode(name: Self.names[index]))
    #expect(code.rawValue == UInt32(index))
    #expect(code.description == Self.names[index])
  }

  @Test("the static codes carry the numbers of section 11.1")
  func constants() {
    let codes: [ErrorCode] = [
      .noError, .protocolError, .internalError, .flowControlError, .streamClosed, .frameSizeError, .refusedStream,
      .cancel, .enhanceYourCalm, .messageTooLarge, .unsupportedVersion,
    ]
    #expect(codes.map(\.rawValue) == Array(0...10))
  }

  @Test("unknown names do not parse", arguments: ["", "protocol_error", "UNKNOWN", "NO_ERROR ", "GOAWAY"])
  func unknownNames(_ name: String) {
    #expect(ErrorCode(name: name) == nil)
  }

  @Test("a code this version does not know still round-trips and prints as UNKNOWN(hex)")
  func unknownCode() {
    let code = ErrorCode(rawValue: 0x2a)
    #expect(code.description == "UNKNOWN(0x2a)")
    #expect(code.rawValue == 42)
    #expect(code != .internalError)
  }
}
