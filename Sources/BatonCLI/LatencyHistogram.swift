import BatonCore

/// Latencies in nanoseconds, counted in log-linear buckets with a fixed relative error, like
/// HdrHistogram: no sample is stored and nothing is sorted.
///
/// A value below 128 has a bucket of its own; above, the bucket is chosen by the value's
/// exponent (the position of its top bit) and the 7 bits below the top bit, so every bucket
/// spans less than 1/128 of its values and a reported percentile (the bucket's midpoint) is
/// within 0.4% of the true sample. Record into one histogram per task and ``merge(_:)`` them at
/// the end: a histogram is a value, with no lock.
public struct LatencyHistogram: Sendable {
  /// Bits of mantissa kept below the top bit.
  static let precisionBits = 7
  static let subBuckets = 1 << precisionBits
  /// Enough buckets for every `UInt64`.
  static let bucketCount = (64 - precisionBits + 1) * subBuckets

  private var counts: [UInt64] = []
  /// How many values were recorded.
  public private(set) var count = 0
  /// The largest value recorded (exact), 0 when empty.
  public private(set) var max: UInt64 = 0
  /// The smallest value recorded (exact), 0 when empty.
  public private(set) var min: UInt64 = 0

  public init() {}

  /// Counts one latency.
  public mutating func record(nanoseconds value: UInt64) {
    if counts.isEmpty { counts = Array(repeating: 0, count: Self.bucketCount) }
    counts[Self.bucket(of: value)] &+= 1
    if count == 0 || value < min { min = value }
    if value > max { max = value }
    count += 1
  }

  /// Adds every value `other` recorded.
  public mutating func merge(_ other: LatencyHistogram) {
    guard other.count > 0 else { return }
    if counts.isEmpty { counts = Array(repeating: 0, count: Self.bucketCount) }
    for index in other.counts.indices where other.counts[index] != 0 {
      counts[index] &+= other.counts[index]
    }
    min = count == 0 ? other.min : Swift.min(min, other.min)
    max = Swift.max(max, other.max)
    count += other.count
  }

  /// The value at `percent` (0...100): the smallest recorded value such that `percent`% of the
  /// values are at or below it, to within the bucket's precision; exact at 100 (``max``).
  /// 0 when empty.
  public func percentile(_ percent: Double) -> UInt64 {
    guard count > 0 else { return 0 }
    if percent >= 100 { return max }
    let wanted = (Swift.max(0, percent) / 100 * Double(count)).rounded(.up)
    let rank = UInt64(Swift.max(1, wanted))
    var seen: UInt64 = 0
    for index in counts.indices where counts[index] != 0 {
      seen &+= counts[index]
      if seen >= rank {
        let (lower, width) = Self.range(of: index)
        let middle = lower &+ (width &- 1) / 2
        return Swift.min(max, Swift.max(min, middle))
      }
    }
    return max
  }

  /// The bucket a value falls in.
  static func bucket(of value: UInt64) -> Int {
    if value < UInt64(subBuckets) { return Int(value) }
    let exponent = 63 - value.leadingZeroBitCount  // >= precisionBits here
    let shift = exponent - precisionBits
    let mantissa = Int((value >> UInt64(shift)) & UInt64(subBuckets - 1))
    return (shift + 1) * subBuckets + mantissa
  }

  /// The smallest value of a bucket and how many values it spans.
  static func range(of bucket: Int) -> (lower: UInt64, width: UInt64) {
    if bucket < subBuckets { return (UInt64(bucket), 1) }
    let shift = bucket / subBuckets - 1
    let mantissa = UInt64(bucket % subBuckets)
    let exponent = shift + precisionBits
    return ((1 << UInt64(exponent)) | (mantissa << UInt64(shift)), 1 << UInt64(shift))
  }
}
