import BatonCore

extension Duration {
  /// The duration in the unit a person reads at a glance, three significant figures at most:
  /// `850ns`, `91µs`, `12.3ms`, `1.20s`, `95.0s`, `2m05s`. What lifecycle log lines and
  /// ``StopReport`` print (Swift's own `description` says `9.1266e-05 seconds`).
  package var readable: String {
    let (seconds, attoseconds) = components
    guard seconds >= 0, attoseconds >= 0 else {
      return "-" + (Duration.zero - self).readable
    }
    // Whole nanoseconds, saturating: durations past 292 years are not a concern here.
    let nanoseconds =
      seconds > Int64.max / 1_000_000_000 - 1
      ? Int64.max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    return Self.readable(nanoseconds: nanoseconds)
  }

  package static func readable(nanoseconds: Int64) -> String {
    if nanoseconds < 1_000 { return "\(nanoseconds)ns" }
    let micros = (Double(nanoseconds) / 1e3).rounded()
    if micros < 1_000 { return "\(Int64(micros))µs" }
    let tenthsOfMillis = (Double(nanoseconds) / 1e5).rounded()
    if tenthsOfMillis < 10_000 { return decimal(Int64(tenthsOfMillis), digits: 1) + "ms" }
    let hundredthsOfSeconds = (Double(nanoseconds) / 1e7).rounded()
    if hundredthsOfSeconds < 1_000 { return decimal(Int64(hundredthsOfSeconds), digits: 2) + "s" }
    let tenthsOfSeconds = (Double(nanoseconds) / 1e8).rounded()
    if tenthsOfSeconds < 1_200 { return decimal(Int64(tenthsOfSeconds), digits: 1) + "s" }
    let wholeSeconds = Int64((Double(nanoseconds) / 1e9).rounded())
    let (minutes, rest) = wholeSeconds.quotientAndRemainder(dividingBy: 60)
    return "\(minutes)m" + (rest < 10 ? "0" : "") + "\(rest)s"
  }

  /// `scaled` / 10^digits with exactly `digits` decimals: `decimal(123, digits: 1)` is `12.3`.
  private static func decimal(_ scaled: Int64, digits: Int) -> String {
    var divisor: Int64 = 1
    for _ in 0..<digits { divisor *= 10 }
    let (whole, fraction) = scaled.quotientAndRemainder(dividingBy: divisor)
    let text = String(fraction)
    return "\(whole)." + String(repeating: "0", count: digits - text.count) + text
  }
}
