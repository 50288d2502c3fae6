/// The reserved metadata names of protocol 1.1's resumable streams (PROTOCOL.md 18).
package enum ResumableStreams {
  /// On a reopened call's OPEN: the latest checkpoint's token, base64url without padding.
  package static let resumeKey = "baton-resume"
  /// On TRAILERS: the stream ended at a checkpoint, to be continued elsewhere.
  package static let resumableKey = "baton-resumable"

  /// base64url without padding (RFC 4648 section 5).
  package static func encode(_ token: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    var out: [UInt8] = []
    out.reserveCapacity((token.count * 4 + 2) / 3)
    var index = 0
    while index < token.count {
      let chunk = token[index..<min(index + 3, token.count)]
      var bits: UInt32 = 0
      for (offset, byte) in chunk.enumerated() { bits |= UInt32(byte) << (16 - 8 * offset) }
      for position in 0...chunk.count { out.append(alphabet[Int((bits >> (18 - 6 * position)) & 0x3F)]) }
      index += 3
    }
    return String(decoding: out, as: UTF8.self)
  }

  /// The token of a `baton-resume` value; nil if it is not base64url without padding.
  package static func decode(_ text: String) -> [UInt8]? {
    var bits: UInt32 = 0
    var count = 0
    var out: [UInt8] = []
    for byte in text.utf8 {
      let value: UInt8
      switch byte {
      case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
      case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
      case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
      case UInt8(ascii: "-"): value = 62
      case UInt8(ascii: "_"): value = 63
      default: return nil
      }
      bits = bits << 6 | UInt32(value)
      count += 6
      if count >= 8 {
        count -= 8
        out.append(UInt8((bits >> UInt32(count)) & 0xFF))
      }
    }
    // A single leftover character (6 bits) cannot come from an encoder.
    return count >= 6 ? nil : out
  }
}
