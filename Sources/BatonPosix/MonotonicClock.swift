import Glibc

/// Nanoseconds on `CLOCK_MONOTONIC`: never jumps, unrelated to the wall clock.
///
/// The unit of every deadline given to ``EventLoop/schedule(at:_:)``.
package enum MonotonicClock {
  /// The current time in nanoseconds since an unspecified point (usually boot).
  @inline(__always)
  package static func now() -> UInt64 {
    var time = timespec()
    // CLOCK_MONOTONIC cannot fail with a valid pointer.
    _ = clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
  }

  /// The deadline `duration` from now; negative durations give `now()`.
  package static func deadline(after duration: Duration) -> UInt64 {
    let (seconds, attoseconds) = duration.components
    if seconds < 0 || (seconds == 0 && attoseconds <= 0) {
      return self.now()
    }
    let nanoseconds = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
    let total = nanoseconds.partialValue.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
    if nanoseconds.overflow || total.overflow {
      return .max
    }
    let (deadline, overflow) = self.now().addingReportingOverflow(total.partialValue)
    return overflow ? .max : deadline
  }
}

extension Duration {
  /// Whole nanoseconds: 0 for a negative duration, `UInt64.max` for one too long to count.
  package var nanoseconds: UInt64 {
    let (seconds, attoseconds) = components
    guard seconds >= 0, attoseconds >= 0 || seconds > 0 else { return 0 }
    let whole = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
    let total = whole.partialValue.addingReportingOverflow(UInt64(max(0, attoseconds) / 1_000_000_000))
    return whole.overflow || total.overflow ? .max : total.partialValue
  }

  /// A duration of `value` nanoseconds, clamped to what `Duration` holds.
  package static func nanoseconds(_ value: UInt64) -> Duration { .nanoseconds(Int64(clamping: value)) }
}
