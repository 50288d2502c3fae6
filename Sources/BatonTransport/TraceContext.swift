/// A W3C Trace Context (https://www.w3.org/TR/trace-context/): which trace a call belongs to
/// and which span is its parent, carried in the `traceparent` (and `tracestate`) metadata.
///
/// Baton does not record spans; it carries the context so that the tracing library you use can.
/// The task-local ``current`` is the span code is running in: the client's
/// `PropagateTraceContext` interceptor sends it with every call, and the server's
/// `ExtractTraceContext` interceptor makes the caller's trace the handler's ``current`` (with a
/// new span id for the server's span, whose ``parentSpanID`` is the caller's span).
public struct TraceContext: Sendable, Hashable, CustomStringConvertible {
  /// 32 lower-case hex digits, not all zero: the whole trace's id.
  public let traceID: String
  /// 16 lower-case hex digits, not all zero: this span's id (the `parent-id` a call sends).
  public let spanID: String
  /// The span this one was started from, if known (the `parent-id` a call arrived with).
  public let parentSpanID: String?
  /// The trace flags byte; bit 0 is "sampled".
  public let flags: UInt8
  /// The vendor-specific `tracestate` that came with the context, passed on unchanged.
  public let traceState: String?

  /// The span code runs in now; nil outside any trace.
  @TaskLocal public static var current: TraceContext?

  /// Whether the caller recorded this trace (flags bit 0).
  public var isSampled: Bool { flags & 1 == 1 }

  /// The `traceparent` header for a call made from this span: version 00, this span as parent.
  public var traceparent: String { "00-\(traceID)-\(spanID)-\(Self.hex(UInt64(flags), digits: 2))" }

  /// The `traceparent` value.
  public var description: String { traceparent }

  /// A context from its parts; nil unless the ids are lower-case hex of the right length and
  /// not all zero.
  public init?(traceID: String, spanID: String, parentSpanID: String? = nil, flags: UInt8, traceState: String? = nil) {
    guard Self.isID(traceID, length: 32), Self.isID(spanID, length: 16) else { return nil }
    if let parentSpanID, !Self.isID(parentSpanID, length: 16) { return nil }
    self.traceID = traceID
    self.spanID = spanID
    self.parentSpanID = parentSpanID
    self.flags = flags
    self.traceState = traceState
  }

  /// The context a `traceparent` header describes, as the W3C specification parses it: nil for
  /// anything invalid (wrong length or separators, upper-case or non-hex digits, version `ff`,
  /// an all-zero trace or parent id, or a version-00 header with anything after the flags).
  /// A later version is read for its first four fields, as the specification asks. The header's
  /// `parent-id` becomes ``spanID``: the span of the caller.
  public init?(traceparent header: String, tracestate: String? = nil) {
    let bytes = Array(header.utf8)
    guard bytes.count >= 55, bytes[2] == 0x2D, bytes[35] == 0x2D, bytes[52] == 0x2D else { return nil }
    guard let version = Self.parseHex(bytes[0..<2]), version != 0xFF else { return nil }
    if version == 0 {
      guard bytes.count == 55 else { return nil }
    } else if bytes.count > 55 {
      guard bytes[55] == 0x2D else { return nil }
    }
    guard let flags = Self.parseHex(bytes[53..<55]) else { return nil }
    let traceID = String(decoding: bytes[3..<35], as: UTF8.self)
    let spanID = String(decoding: bytes[36..<52], as: UTF8.self)
    self.init(traceID: traceID, spanID: spanID, flags: UInt8(flags), traceState: tracestate)
  }

  /// A new trace, with random ids.
  public static func newTrace(sampled: Bool = true) -> TraceContext {
    TraceContext(
      checkedTraceID: hex(randomNonZero(), digits: 16) + hex(UInt64.random(in: .min ... .max), digits: 16),
      spanID: hex(randomNonZero(), digits: 16), parentSpanID: nil, flags: sampled ? 1 : 0, traceState: nil)
  }

  /// A new span in the same trace, started from this one.
  public func childSpan() -> TraceContext {
    TraceContext(
      checkedTraceID: traceID, spanID: Self.hex(Self.randomNonZero(), digits: 16), parentSpanID: spanID,
      flags: flags, traceState: traceState)
  }

  private init(checkedTraceID: String, spanID: String, parentSpanID: String?, flags: UInt8, traceState: String?) {
    self.traceID = checkedTraceID
    self.spanID = spanID
    self.parentSpanID = parentSpanID
    self.flags = flags
    self.traceState = traceState
  }

  private static func randomNonZero() -> UInt64 { UInt64.random(in: 1 ... .max) }

  private static func hex(_ value: UInt64, digits: Int) -> String {
    let text = String(value, radix: 16)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
  }

  /// Lower-case hex digits only.
  private static func parseHex(_ bytes: ArraySlice<UInt8>) -> UInt64? {
    var value: UInt64 = 0
    for byte in bytes {
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): value = value << 4 | UInt64(byte - UInt8(ascii: "0"))
      case UInt8(ascii: "a")...UInt8(ascii: "f"): value = value << 4 | UInt64(byte - UInt8(ascii: "a") + 10)
      default: return nil
      }
    }
    return value
  }

  private static func isID(_ text: String, length: Int) -> Bool {
    let bytes = Array(text.utf8)
    guard bytes.count == length else { return false }
    var nonZero = false
    for byte in bytes {
      switch byte {
      case UInt8(ascii: "0"): continue
      case UInt8(ascii: "1")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"): nonZero = true
      default: return false
      }
    }
    return nonZero
  }
}
