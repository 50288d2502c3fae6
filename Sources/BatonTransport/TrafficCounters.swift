package import Synchronization

/// Bytes a set of connections read and wrote, shared by all of them (a server's `/metrics`).
///
/// One relaxed add per read or write system call, not per frame: small next to the call itself.
package final class TrafficCounters: Sendable {
  package let received = Atomic<Int>(0)
  package let sent = Atomic<Int>(0)
  package init() {}
}
