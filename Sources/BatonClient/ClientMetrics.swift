import BatonCore
import BatonPosix
import Synchronization

/// The client's per-call counts, for ``Client/metricsPage``.
///
/// A call costs a hash of its method name and a lock-free probe of a small table to find its
/// slot (once, at its start), then relaxed atomic adds: started, its outcome, its duration's
/// bucket and sum. No lock, no allocation, except at the first call of each of the first 100
/// methods.
///
/// The client cannot know a server's method set, and a program that passes through method
/// names it was given (a proxy, a gateway) would otherwise grow the page without bound: the
/// first ``maxMethods`` distinct names get their own label, every later one shares
/// `method="other"`.
final class ClientMetrics: Sendable {
  /// Distinct method labels; later names are counted as ``otherMethod``.
  static let maxMethods = 100
  /// The label shared by the methods past ``maxMethods``.
  static let otherMethod = "other"
  /// Table size: a power of two over twice ``maxMethods``, so probes stay short (a name past
  /// the cap probes to the first empty bucket).
  private static let capacity = 256

  typealias MethodSlot = MethodMetrics

  /// The table: per bucket, the address of its method's slot (kept alive by ``owned``), 0 while
  /// empty. Set once, under ``owned``'s lock; read without it. Plain atomics, not objects, so
  /// that a lookup touches no reference count.
  nonisolated(unsafe) private let buckets: UnsafeMutablePointer<Atomic<UInt>>
  /// Every method slot handed out, in first-call order: owns them for the buckets, and its lock
  /// orders the first calls of new names (so the first 100 names, exactly, get a slot).
  private let owned = Locked<[MethodSlot]>([])
  /// Every slot is handed out: a name not in the table is `other` without taking the lock.
  private let full = Atomic<Bool>(false)
  let other = MethodSlot(name: ClientMetrics.otherMethod)
  let retriedNotProcessed = MetricCounter()
  let retriedIdempotent = MetricCounter()
  let resumptions = MetricCounter()
  /// The configuration's constant labels, first in every sample.
  let labels: [(String, String)]

  init(labels: [(String, String)]) {
    self.labels = labels
    buckets = .allocate(capacity: Self.capacity)
    for index in 0..<Self.capacity { (buckets + index).initialize(to: Atomic(0)) }
  }

  deinit {
    buckets.deinitialize(count: Self.capacity)
    buckets.deallocate()
  }

  /// The slot of `method`: its own among the first ``maxMethods`` names, else ``other``.
  func slot(for method: String) -> MethodSlot {
    find(method, { $0 }) ?? unlisted(method)
  }

  /// Where a call of `method` is counted: ``slot(for:)``'s counts, found without retaining the
  /// slot. A hash, then (almost always) one acquiring load and one string comparison.
  func counts(for method: String) -> MethodCounts {
    find(method, \.counts) ?? unlisted(method).counts
  }

  /// The slot of a name the table does not hold: its own while slots are left, else ``other``.
  private func unlisted(_ method: String) -> MethodSlot {
    full.load(ordering: .relaxed) ? other : insert(method)
  }

  /// `body` applied to `method`'s slot if the table has it, nil if not (or it is full of others).
  @inline(__always)
  private func find<T>(_ method: String, _ body: (MethodSlot) -> T) -> T? {
    let mask = Self.capacity - 1
    var index = Self.hash(method) & mask
    for _ in 0..<Self.capacity {
      let bits = buckets[index].load(ordering: .acquiring)
      guard bits != 0, let pointer = UnsafeRawPointer(bitPattern: bits) else { return nil }
      let found = Unmanaged<MethodSlot>.fromOpaque(pointer)._withUnsafeGuaranteedRef { slot in
        slot.name == method ? body(slot) : nil
      }
      if let found { return found }
      index = (index + 1) & mask
    }
    return nil
  }

  /// FNV-1a over the name's UTF-8. Every call hashes its method name, and this costs a few
  /// instructions per byte where `hashValue` (seeded SipHash) costs a few hundred per call.
  /// Flooding one bucket gains nothing: the table holds at most ``maxMethods`` names.
  @inline(__always)
  private static func hash(_ method: String) -> Int {
    func fnv1a(_ bytes: some Sequence<UInt8>) -> Int {
      var hash: UInt64 = 0xcbf2_9ce4_8422_2325
      for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
      return Int(truncatingIfNeeded: hash ^ (hash >> 32))
    }
    return method.utf8.withContiguousStorageIfAvailable(fnv1a) ?? fnv1a(method.utf8)
  }

  /// The first call of a name not seen yet (or one racing it), while slots are left: under the
  /// lock, once per name.
  private func insert(_ method: String) -> MethodSlot {
    owned.withLock { owned in
      if let slot = find(method, { $0 }) { return slot }  // another call of it came first
      guard owned.count < Self.maxMethods else { return other }
      let mask = Self.capacity - 1
      var index = Self.hash(method) & mask
      while buckets[index].load(ordering: .relaxed) != 0 { index = (index + 1) & mask }
      let slot = MethodSlot(name: method)
      owned.append(slot)
      buckets[index].store(UInt(bitPattern: Unmanaged.passUnretained(slot).toOpaque()), ordering: .releasing)
      if owned.count == Self.maxMethods { full.store(true, ordering: .relaxed) }
      return slot
    }
  }

  func retries(_ reason: ClientEvent.RetryReason) -> MetricCounter {
    switch reason {
    case .notProcessed: retriedNotProcessed
    case .idempotent: retriedIdempotent
    }
  }

  /// Every method slot handed out, by name, then ``other`` if a call used it.
  private var methodSlots: [MethodSlot] {
    var slots = owned.withLock { $0 }.sorted { $0.name < $1.name }
    if other.started > 0 { slots.append(other) }
    return slots
  }

  // MARK: - The page

  func write(_ endpoints: [ConnectionPool.EndpointMetrics], into page: inout PrometheusPage) {
    let slots = methodSlots
    page.family(
      "baton_client_calls_started_total", type: "counter",
      help: "Calls started, by method (the first 100 names; later ones are method=\"other\").")
    for slot in slots {
      page.sample(
        "baton_client_calls_started_total", labels: labels + [("method", slot.name)], value: slot.started)
    }
    page.family(
      "baton_client_calls_handled_total", type: "counter",
      help: "Calls that ended, by method and the status the caller saw.")
    for slot in slots {
      for status in 0...16 {
        let count = slot.handled(status)
        // Codes never seen are left out (there are 17 per method); OK is always shown.
        guard count > 0 || status == 0 else { continue }
        page.sample(
          "baton_client_calls_handled_total",
          labels: labels + [("method", slot.name), ("code", PrometheusPage.codeNames[status])], value: count)
      }
    }
    page.family(
      "baton_client_call_seconds", type: "histogram",
      help: "Call duration as the caller saw it (waiting for a connection and retries included), by method.")
    for slot in slots {
      page.histogram("baton_client_call_seconds", labels + [("method", slot.name)], slot.duration)
    }
    page.family(
      "baton_client_retries_total", type: "counter",
      help:
        "Attempts repeated on another connection: not_processed (the server provably did not process the call; "
        + "free) or idempotent (the call may have been processed; taken from the retry budget).")
    page.sample(
      "baton_client_retries_total", labels: labels + [("reason", "not_processed")], value: retriedNotProcessed.load)
    page.sample(
      "baton_client_retries_total", labels: labels + [("reason", "idempotent")], value: retriedIdempotent.load)
    page.family(
      "baton_client_resumptions_total", type: "counter",
      help: "Streams continued from a server's checkpoint on a new stream (protocol 1.1).")
    page.sample("baton_client_resumptions_total", labels: labels, value: resumptions.load)

    let perEndpoint: [(String, String, String, (ConnectionPool.EndpointMetrics) -> Int)] = [
      (
        "baton_client_attempts_total", "counter", "Call attempts sent to the endpoint, counted as each ends.",
        \.attempts
      ),
      ("baton_client_goaways_received_total", "counter", "GOAWAY frames received from the endpoint.", \.goAways),
      (
        "baton_client_connections_lost_total", "counter",
        "Ready connections to the endpoint that ended without GOAWAY (lost, reset, silent past the keepalive).",
        \.connectionsLost
      ),
      (
        "baton_client_open_connections", "gauge",
        "Connections to the endpoint open now: the ready one and those that still finish calls after a GOAWAY.",
        \.openConnections
      ),
      ("baton_client_active_calls", "gauge", "Calls running on the endpoint's connections now.", \.activeCalls),
      ("baton_client_sent_bytes_total", "counter", "Bytes written to the endpoint's connections.", \.sentBytes),
      (
        "baton_client_received_bytes_total", "counter", "Bytes read from the endpoint's connections.",
        \.receivedBytes
      ),
    ]
    for (name, type, help, value) in perEndpoint {
      page.family(name, type: type, help: help)
      for endpoint in endpoints {
        page.sample(name, labels: labels + [("endpoint", endpoint.endpoint)], value: value(endpoint))
      }
    }
  }

  /// The configuration's constant labels, in key order, without names the format or the
  /// client's own labels forbid.
  static func constantLabels(_ labels: [String: String]) -> (valid: [(String, String)], dropped: [String]) {
    let reserved: Set<String> = ["method", "code", "le", "reason", "endpoint"]
    var valid: [(String, String)] = []
    var dropped: [String] = []
    for (name, value) in labels.sorted(by: { $0.key < $1.key }) {
      if isLabelName(name) && !reserved.contains(name) && !name.hasPrefix("__") {
        valid.append((name, value))
      } else {
        dropped.append(name)
      }
    }
    return (valid, dropped)
  }

  /// `[a-zA-Z_][a-zA-Z0-9_]*`.
  static func isLabelName(_ name: String) -> Bool {
    guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { return false }
    return name.utf8.allSatisfy { byte in
      (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
        || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "_")
    }
  }
}

/// Where a call's metering starts: its method's slot (nil with metrics off) and its start time.
struct CallMeter {
  /// nil with metrics off; valid while the client (which owns its metrics) lives, as a call does.
  let counts: MethodCounts?
  let start: UInt64
}

extension Client {
  /// A call starts: counted, told to the observer, timed. nil when neither metrics nor an
  /// observer want it (one branch).
  @inline(__always)
  func meterStart(_ method: String) -> CallMeter? {
    guard measures else { return nil }
    let counts = metrics?.counts(for: method)
    counts?.callStarted()
    if observes { observer?.observe(.callStarted(method: method)) }
    return CallMeter(counts: counts, start: MonotonicClock.now())
  }

  /// A call ended, with `error` (already the caller's, see ``rpcError(_:)``) or OK.
  func meterEnd(_ meter: CallMeter, _ method: String, _ error: (any Error)?) {
    let nanoseconds = MonotonicClock.now() &- meter.start
    let code: RPCError.Code? = error.map { ($0 as? RPCError)?.code ?? .unknown }
    meter.counts?.callEnded(status: code?.rawValue ?? 0, nanoseconds: nanoseconds)
    if observes { observer?.observe(.callFinished(method: method, status: code, duration: .nanoseconds(nanoseconds))) }
  }

  /// An attempt is repeated on another connection.
  func noteRetry(_ reason: ClientEvent.RetryReason, method: String) {
    counters.retried.add(1, ordering: .relaxed)
    metrics?.retries(reason).add()
    observer?.observe(.retried(method: method, reason: reason))
  }

  /// A stream continues from a checkpoint on a new stream.
  func noteResumption(method: String) {
    counters.resumed.add(1, ordering: .relaxed)
    metrics?.resumptions.add()
    observer?.observe(.resumed(method: method))
  }
}
