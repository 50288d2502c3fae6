import BatonCore
import BatonTransport

/// Sends the current trace (``TraceContext/current``) with every call as W3C `traceparent` (and
/// `tracestate`) metadata, so the server's spans join the caller's trace. Replaces any
/// `traceparent` the call already carried; a call made outside any trace is sent unchanged.
///
/// ```swift
/// let client = Client(endpoints: endpoints, configuration: .init(interceptors: [PropagateTraceContext()]))
/// try await TraceContext.$current.withValue(span) { try await client.unary(...) }
/// ```
public struct PropagateTraceContext: ClientInterceptor {
  /// The interceptor; it has no settings.
  public init() {}

  /// Adds the current trace's metadata, then goes on.
  public func intercept(_ call: ClientCall, next: (ClientCall) async throws -> Void) async throws {
    guard let trace = TraceContext.current else { return try await next(call) }
    var call = call
    var metadata = Metadata(
      call.options.metadata.entries.filter { $0.name != "traceparent" && $0.name != "tracestate" })
    metadata.add("traceparent", trace.traceparent)
    if let state = trace.traceState, !state.isEmpty { metadata.add("tracestate", state) }
    call.options.metadata = metadata
    try await next(call)
  }
}
