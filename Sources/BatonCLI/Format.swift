import BatonClient
import BatonCore

/// Number and error formatting shared by the commands' result lines.
enum Format {
  /// `value` with exactly `digits` decimals (`fixed(2.345, 2)` is `"2.35"`), without Foundation.
  static func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return value.isNaN ? "nan" : (value < 0 ? "-inf" : "inf") }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9e18 else { return String(value) }
    let whole = Int64(scaled)
    let divisor = Int64(scale)
    var fraction = String(whole % divisor)
    while fraction.count < digits { fraction = "0" + fraction }
    let sign = value < 0 && whole != 0 ? "-" : ""
    return sign + String(whole / divisor) + (digits > 0 ? "." + fraction : "")
  }

  /// Nanoseconds as microseconds with one decimal.
  static func micros(_ nanoseconds: UInt64) -> String { fixed(Double(nanoseconds) / 1_000, 1) }

  /// Nanoseconds as milliseconds with one decimal.
  static func millis(_ nanoseconds: UInt64) -> String { fixed(Double(nanoseconds) / 1_000_000, 1) }

  /// The key a failure is counted under: the status code's name (`unavailable`), or the error's type.
  static func errorKey(_ error: any Error) -> String {
    if let error = error as? RPCError { return "\(error.code)" }
    return "other(\(type(of: error)))"
  }

  /// `code:count,code:count` sorted by code, or `0` when there were none.
  static func failures(_ failures: [String: Int]) -> String {
    if failures.isEmpty { return "0" }
    return failures.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
  }

  /// A deterministic payload of `size` bytes.
  static func payload(_ size: Int) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
  }

  /// A JSON string literal.
  static func json(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      default:
        if scalar.value < 0x20 {
          let hex = String(scalar.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        } else {
          out.unicodeScalars.append(scalar)
        }
      }
    }
    return out + "\""
  }
}
