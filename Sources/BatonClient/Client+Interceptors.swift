import BatonCore
import BatonTransport

/// Code that runs around every call a ``Client`` makes: attaching credentials, propagating a
/// deadline or a trace, logging, metrics.
///
/// An interceptor gets the call (``ClientCall``) and `next`, the rest of the chain ending in the
/// call itself. It may
/// - read and change ``ClientCall/options`` before calling `next`: metadata, timeout,
///   idempotence, waiting for ready (the options' own ``CallOptions/interceptors`` are already
///   in the chain: changing them there has no effect);
/// - reject the call by throwing without calling `next`: nothing is sent;
/// - wrap the request and response messages (``ClientCall/interceptRequests(_:)``,
///   ``ClientCall/interceptResponses(_:)``);
/// - observe the outcome: `next` returns when the call has succeeded (for a streaming call: when
///   the caller's body has returned) and throws its error otherwise.
///
/// The chain runs once per call, outside Baton's transparent retries: a call retried on another
/// endpoint because the first one did not process it passes through each interceptor once.
///
/// Order: the configuration's interceptors (``Client/Configuration/interceptors``) run first, in
/// order, then the call's (``CallOptions/interceptors``); the first is outermost. Request
/// messages pass through the request wrappers in that order (outermost first); response
/// messages pass through the response wrappers in reverse order (innermost first).
///
/// ```swift
/// struct BearerToken: ClientInterceptor {
///   let token: String
///   func intercept(_ call: ClientCall, next: (ClientCall) async throws -> Void) async throws {
///     var call = call
///     call.options.metadata.add("authorization", "Bearer \(token)")
///     try await next(call)
///   }
/// }
/// let client = Client(endpoints: endpoints, configuration: .init(interceptors: [BearerToken(token: "s3cret")]))
/// ```
public protocol ClientInterceptor: Sendable {
  /// Runs around one call; call `next` (at most once) to go on towards the wire.
  func intercept(_ call: ClientCall, next: (ClientCall) async throws -> Void) async throws
}

/// One call as a client interceptor sees it.
public struct ClientCall: Sendable {
  /// A transform of one message; throwing fails the call with that error.
  public typealias MessageTransform = @Sendable ([UInt8]) async throws -> [UInt8]

  /// The method called.
  public let method: String
  /// How many messages go each way.
  public let shape: CallShape
  /// The call's options; change them before calling `next` (metadata, timeout, ...).
  public var options: CallOptions

  var requestTransforms: [MessageTransform] = []
  var responseTransforms: [MessageTransform] = []

  init(method: String, shape: CallShape, options: CallOptions) {
    self.method = method
    self.shape = shape
    self.options = options
  }

  /// Passes every request message through `transform` (after outer interceptors' transforms)
  /// before it is sent. A unary or server-streaming request is one message.
  public mutating func interceptRequests(_ transform: @escaping MessageTransform) {
    requestTransforms.append(transform)
  }

  /// Passes every response message through `transform` (after inner interceptors' transforms)
  /// before the caller sees it.
  public mutating func interceptResponses(_ transform: @escaping MessageTransform) {
    responseTransforms.append(transform)
  }

  /// The request transforms as one, outermost first; nil if there are none.
  var outbound: MessageTransform? { composed(requestTransforms) }
  /// The response transforms as one, innermost first; nil if there are none.
  var inbound: MessageTransform? { composed(responseTransforms.reversed()) }
}

/// What a call's interceptors do to its messages: nil (the usual case) leaves them alone.
struct MessageTransforms: Sendable {
  var outbound: ClientCall.MessageTransform?
  var inbound: ClientCall.MessageTransform?

  static let none = MessageTransforms(outbound: nil, inbound: nil)
}

extension Client {
  /// Whether a call with `options` runs an interceptor chain (one branch on the fast path).
  @inline(__always)
  func hasInterceptors(_ options: CallOptions) -> Bool {
    !configuration.interceptors.isEmpty || !options.interceptors.isEmpty
  }

  /// Runs the configuration's and the call's interceptors around `terminal`.
  ///
  /// Inlined into its callers, and the last interceptor gets `terminal` itself as its `next`:
  /// with one interceptor the chain adds just that interceptor's frame and the terminal's (each
  /// async frame costs an allocation and an executor check on the way back).
  @inline(__always)
  func intercept(
    _ method: String, _ shape: CallShape, _ options: CallOptions,
    _ terminal: (ClientCall) async throws -> Void
  ) async throws {
    // No array is built for the usual case of one list.
    let interceptors =
      options.interceptors.isEmpty
      ? configuration.interceptors
      : configuration.interceptors.isEmpty ? options.interceptors : configuration.interceptors + options.interceptors
    var options = options
    if !options.interceptors.isEmpty { options.interceptors = [] }
    let call = ClientCall(method: method, shape: shape, options: options)
    if interceptors.count == 1 {
      try await interceptors[0].intercept(call, next: terminal)
    } else {
      try await Self.run(interceptors, from: 0, call, terminal)
    }
  }

  private static func run(
    _ interceptors: [any ClientInterceptor], from index: Int, _ call: ClientCall,
    _ terminal: (ClientCall) async throws -> Void
  ) async throws {
    guard index < interceptors.count else { return try await terminal(call) }
    if index == interceptors.count - 1 { return try await interceptors[index].intercept(call, next: terminal) }
    try await interceptors[index].intercept(call) { call in
      try await run(interceptors, from: index + 1, call, terminal)
    }
  }

  /// A unary call through the interceptors: ``unaryResponse(_:_:options:)`` comes here when any
  /// are registered. The call's timeout counts from the end of the chain, as a streaming call's
  /// does.
  func interceptedUnary(_ method: String, _ request: [UInt8], _ options: CallOptions) async throws -> UnaryResponse {
    var response: UnaryResponse?
    try await intercept(method, .unary, options) { call in
      var request = request
      if let outbound = call.outbound { request = try await outbound(request) }
      var reply: UnaryResponse
      do {
        reply = try await performUnary(call.method, request, call.options)
      } catch {
        throw Self.rpcError(error)  // what the interceptors see is what the caller will
      }
      if let inbound = call.inbound { reply.message = try await inbound(reply.message) }
      response = reply
    }
    guard let response else {
      throw RPCError(code: .internal, message: "a client interceptor ended the call without sending it")
    }
    return response
  }

  /// A streaming call through the interceptors: the private `streaming` entry comes here when
  /// any are registered; `run` is the call without them, given the options and transforms the
  /// chain ended with.
  func interceptedStreaming<Result: Sendable>(
    _ method: String, _ shape: CallShape, _ options: CallOptions, request: [UInt8]?,
    _ run: (CallOptions, [UInt8]?, MessageTransforms) async throws -> Result
  ) async throws -> Result {
    var result: Result?
    try await intercept(method, shape, options) { call in
      var request = request
      if let single = request, let outbound = call.outbound { request = try await outbound(single) }
      result = try await run(call.options, request, MessageTransforms(outbound: call.outbound, inbound: call.inbound))
    }
    guard let result else {
      throw RPCError(code: .internal, message: "a client interceptor ended the call without sending it")
    }
    return result
  }
}

extension RequestWriter {
  /// A write through the interceptors' request wrappers.
  @usableFromInline
  func writeTransformed(_ message: [UInt8], _ transform: ClientCall.MessageTransform) async throws {
    let message = try await transform(message)
    guard let unfinished = try send(message) else { return }
    try await complete(unfinished)
  }
}

extension ResponseStream.AsyncIterator {
  /// The next reply through the interceptors' response wrappers.
  @usableFromInline
  mutating func nextTransformed(_ transform: ClientCall.MessageTransform) async throws -> [UInt8]? {
    let message: [UInt8]?
    if let batched = takeBatched() { message = batched } else { message = try await receive() }
    guard let message else { return nil }
    return try await transform(message)
  }
}
