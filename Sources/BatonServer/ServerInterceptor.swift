import BatonCore
import BatonTransport

/// Code that runs around every call a ``Router`` answers, between the wire and the handler:
/// authentication, logging, metrics, tracing, metadata rewriting.
///
/// An interceptor gets the call (``ServerCall``) and `next`, the rest of the chain ending in the
/// handler. It may
/// - read and change ``ServerCall/metadata`` before calling `next` (the handler's
///   ``ServerContext/requestMetadata`` is what reaches the end of the chain);
/// - reject the call by throwing (an ``RPCError`` becomes the call's status) without calling
///   `next`: the handler never runs;
/// - wrap the request and response messages (``ServerCall/interceptRequests(_:)``,
///   ``ServerCall/interceptResponses(_:)``);
/// - observe the outcome: `next` returns when the handler has succeeded and throws its error
///   otherwise, so the time around it is the handling time. The status is sent once the whole
///   chain has returned: an interceptor that throws after `next` succeeded turns the call into
///   that error (a unary reply is then dropped; messages a streaming handler wrote have gone).
///
/// Order: interceptors run in registration order, the first registered outermost. Request
/// messages pass through their request wrappers in that order (outermost first); response
/// messages pass through the response wrappers in reverse order (innermost first), as they
/// travel back out.
///
/// A call the chain rejects was accepted on the wire: it ends with TRAILERS carrying the error,
/// so a client knows it was processed and does not retry it elsewhere. A method the router does
/// not know is answered `unimplemented` without running the chain.
///
/// ```swift
/// struct RequireToken: ServerInterceptor {
///   func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws {
///     guard call.metadata["authorization"] == "Bearer s3cret" else {
///       throw RPCError(code: .unauthenticated, message: "a valid bearer token is required")
///     }
///     try await next(call)
///   }
/// }
/// router.addInterceptor(RequireToken())
/// ```
public protocol ServerInterceptor: Sendable {
  /// Runs around one call; call `next` (at most once) to go on towards the handler.
  func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws
}

/// One call as a server interceptor sees it.
public struct ServerCall: Sendable {
  /// A transform of one message; throwing fails the call with that error.
  public typealias MessageTransform = @Sendable ([UInt8]) async throws -> [UInt8]

  /// The method the client called (registered in the router: unknown ones never reach a chain).
  public let method: String
  /// How many messages go each way.
  public let shape: CallShape
  /// The request metadata. Change it before calling `next`: the handler sees what reaches the
  /// end of the chain.
  public var metadata: Metadata
  /// The call's context: peer, timeout, drain state, and the response and trailing metadata
  /// (which an interceptor may set too; the handler's context shares them).
  public let context: ServerContext

  var requestTransforms: [MessageTransform] = []
  var responseTransforms: [MessageTransform] = []

  init(method: String, shape: CallShape, metadata: Metadata, context: ServerContext) {
    self.method = method
    self.shape = shape
    self.metadata = metadata
    self.context = context
  }

  /// Passes every request message through `transform` before the handler (and inner
  /// interceptors' transforms) see it. A unary or server-streaming request is one message.
  public mutating func interceptRequests(_ transform: @escaping MessageTransform) {
    requestTransforms.append(transform)
  }

  /// Passes every response message the handler produces through `transform` (after inner
  /// interceptors' transforms) before it is sent.
  public mutating func interceptResponses(_ transform: @escaping MessageTransform) {
    responseTransforms.append(transform)
  }

  /// The request transforms as one, outermost first; nil if there are none.
  var inbound: MessageTransform? { composed(requestTransforms) }
  /// The response transforms as one, innermost first; nil if there are none.
  var outbound: MessageTransform? { composed(responseTransforms.reversed()) }
}

extension Router {
  /// Adds an interceptor around every call of this router; the first added runs outermost.
  /// See ``ServerInterceptor`` for what one may do and in which order the chain runs.
  public mutating func addInterceptor(_ interceptor: any ServerInterceptor) {
    interceptors.append(interceptor)
  }
}

/// Runs `interceptors` around `terminal`: inlined into the dispatcher, so that one interceptor
/// adds only its own frame and the terminal's.
@inline(__always)
func interceptServerCall(
  _ interceptors: [any ServerInterceptor], _ call: ServerCall, _ terminal: (ServerCall) async throws -> Void
) async throws {
  if interceptors.count == 1 {
    try await interceptors[0].intercept(call, next: terminal)
  } else {
    try await runServerChain(interceptors, from: 0, call, terminal)
  }
}

/// Runs `interceptors[index...]` around `terminal`. The last interceptor gets `terminal` itself
/// as its `next`: one async frame (and one executor check on the way back) fewer per call than
/// a closure that would only call on.
func runServerChain(
  _ interceptors: [any ServerInterceptor], from index: Int, _ call: ServerCall,
  _ terminal: (ServerCall) async throws -> Void
) async throws {
  guard index < interceptors.count else { return try await terminal(call) }
  if index == interceptors.count - 1 { return try await interceptors[index].intercept(call, next: terminal) }
  try await interceptors[index].intercept(call) { call in
    try await runServerChain(interceptors, from: index + 1, call, terminal)
  }
}
