import BatonCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The few process facts the benchmarks need from Linux.
enum SystemResources {
  /// Raises the soft limit on open files as far as the hard limit allows; returns the soft limit
  /// now in force (nil if it cannot be read).
  @discardableResult
  static func raiseFileLimit() -> UInt64? {
    var limit = rlimit()
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    guard getrlimit(resource, &limit) == 0 else { return nil }
    if limit.rlim_cur < limit.rlim_max {
      var raised = limit
      raised.rlim_cur = limit.rlim_max
      if setrlimit(resource, &raised) == 0 { return UInt64(raised.rlim_cur) }
    }
    return UInt64(limit.rlim_cur)
  }

  /// The resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
  static func residentKiB(pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
      let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
      guard fields.count >= 2 else { return nil }
      return Int(fields[1])
    }
    return nil
  }
}
