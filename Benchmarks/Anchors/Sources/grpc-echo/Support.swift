#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Monotonic nanoseconds.
func now() -> Int64 {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Writes one whole line with one write(2), so that a script reading a pipe never sees half a line.
func emit(_ text: String) {
  var line = text + "\n"
  line.withUTF8 { bytes in
    var done = 0
    while done < bytes.count {
      let n = write(1, bytes.baseAddress! + done, bytes.count - done)
      if n <= 0 { return }
      done += n
    }
  }
}

/// `value` with `digits` decimals, without Foundation.
func fixed(_ value: Double, _ digits: Int) -> String {
  var scale = 1.0
  for _ in 0..<digits { scale *= 10 }
  let scaled = Int64((abs(value) * scale).rounded())
  let whole = scaled / Int64(scale)
  var fraction = String(scaled % Int64(scale))
  while fraction.count < digits { fraction = "0" + fraction }
  return (value < 0 ? "-" : "") + String(whole) + (digits > 0 ? "." + fraction : "")
}

/// The same payload `baton bench` sends: `size` bytes of a simple pattern.
func payload(_ size: Int) -> [UInt8] {
  (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
}

struct UsageError: Error, CustomStringConvertible {
  var description: String
}

/// `--name value` pairs after the subcommand.
struct Options {
  private var values: [String: String] = [:]

  init(_ arguments: ArraySlice<String>, allowed: Set<String>) throws {
    var rest = arguments[...]
    while let name = rest.popFirst() {
      guard allowed.contains(name) else { throw UsageError(description: "unknown option '\(name)'") }
      guard let value = rest.popFirst() else { throw UsageError(description: "option '\(name)' needs a value") }
      values[name] = value
    }
  }

  func int(_ name: String, _ fallback: Int?) throws -> Int {
    guard let text = values[name] else {
      if let fallback { return fallback }
      throw UsageError(description: "option '\(name)' is required")
    }
    guard let value = Int(text), value >= 0 else { throw UsageError(description: "option '\(name)': bad value '\(text)'") }
    return value
  }

  func seconds(_ name: String, _ fallback: Double) throws -> Double {
    guard let text = values[name] else { return fallback }
    guard let value = Double(text), value >= 0 else { throw UsageError(description: "option '\(name)': bad value '\(text)'") }
    return value
  }
}

/// Latency percentile from sorted samples (nearest rank).
func percentile(_ sorted: [Int64], _ p: Double) -> Int64 {
  guard !sorted.isEmpty else { return 0 }
  let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
  return sorted[min(sorted.count - 1, max(0, rank - 1))]
}

func micros(_ nanoseconds: Int64) -> String { fixed(Double(nanoseconds) / 1000, 1) }
