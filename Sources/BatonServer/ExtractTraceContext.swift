import BatonCore
import BatonTransport

/// Makes the caller's W3C trace the handler's: the handler (and every call it makes through a
/// client with `PropagateTraceContext`) runs with ``TraceContext/current`` set to a new span
/// of the caller's trace, whose ``TraceContext/parentSpanID`` is the caller's span.
///
/// A call without a valid `traceparent` (absent, or invalid by the W3C rules: see
/// ``TraceContext/init(traceparent:tracestate:)``) starts a new trace when
/// ``startsNewTraces`` is set (the default, as the specification recommends), or runs outside
/// any trace otherwise.
public struct ExtractTraceContext: ServerInterceptor {
  /// Whether a call that arrives without a valid trace starts a new (unsampled) one.
  public var startsNewTraces: Bool

  /// The interceptor; see ``startsNewTraces``.
  public init(startsNewTraces: Bool = true) {
    self.startsNewTraces = startsNewTraces
  }

  /// Runs the rest of the chain with the call's trace as ``TraceContext/current``.
  public func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws {
    let incoming = call.metadata["traceparent"].flatMap {
      TraceContext(traceparent: $0, tracestate: call.metadata["tracestate"])
    }
    let span = incoming?.childSpan() ?? (startsNewTraces ? TraceContext.newTrace(sampled: false) : nil)
    try await TraceContext.$current.withValue(span) { try await next(call) }
  }
}
