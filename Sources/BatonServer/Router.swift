import BatonCore
import Foundation

/// The methods a server answers, by name. Built before the server starts and immutable after,
/// so looking a method up needs no lock.
///
/// Method names are free-form; `package.Service/Method` is the convention. Registering a name
/// twice keeps the last handler.
public struct Router: Sendable {
  enum Handler: Sendable {
    case unary(@Sendable ([UInt8], ServerContext) async throws -> [UInt8])
    case serverStreaming(@Sendable ([UInt8], ResponseWriter, ServerContext) async throws -> Void)
    case clientStreaming(@Sendable (RequestStream, ServerContext) async throws -> [UInt8])
    case bidirectional(@Sendable (RequestStream, ResponseWriter, ServerContext) async throws -> Void)

    var shape: CallShape {
      switch self {
      case .unary: .unary
      case .serverStreaming: .serverStreaming
      case .clientStreaming: .clientStreaming
      case .bidirectional: .bidirectional
      }
    }
  }

  /// A handler and its method's place in the registration order (its metrics slot).
  struct Registered: Sendable {
    var handler: Handler
    var index: Int
  }

  var handlers: [String: Registered] = [:]
  /// Method names in registration order: `handlers[name].index` indexes this.
  var registrationOrder: [String] = []

  private mutating func register(_ method: String, _ handler: Handler) {
    if let index = handlers[method]?.index {
      handlers[method] = Registered(handler: handler, index: index)
    } else {
      handlers[method] = Registered(handler: handler, index: registrationOrder.count)
      registrationOrder.append(method)
    }
  }
  /// Run around every call, first outermost (``addInterceptor(_:)``).
  var interceptors: [any ServerInterceptor] = []
  /// Methods whose streams may checkpoint and move to another server (PROTOCOL.md 18).
  var resumableMethods: Set<String> = []

  /// An empty router: every method is unknown (UNIMPLEMENTED) until registered.
  public init() {}

  /// The method names registered, sorted.
  public var methods: [String] { handlers.keys.sorted() }

  /// One request message in, one response message out.
  public mutating func unary(
    _ method: String,
    _ handler: @escaping @Sendable (_ request: [UInt8], _ context: ServerContext) async throws -> [UInt8]
  ) {
    register(method, .unary(handler))
  }

  /// One request message in, any number of response messages out through the writer.
  ///
  /// `resumable`: the stream may move to another server (protocol 1.1, PROTOCOL.md 18). The
  /// handler marks checkpoints (``ResponseWriter/write(_:checkpoint:)``), continues after
  /// ``ServerContext/resumeToken`` when it is set, and must send the same messages after a given
  /// token every time; a graceful stop then ends the stream at its next checkpoint instead of
  /// letting it run to the deadline, and the client continues it elsewhere.
  public mutating func serverStreaming(
    _ method: String, resumable: Bool = false,
    _ handler:
      @escaping @Sendable (_ request: [UInt8], _ responses: ResponseWriter, _ context: ServerContext)
      async throws -> Void
  ) {
    register(method, .serverStreaming(handler))
    markResumable(method, resumable)
  }

  /// Any number of request messages in, one response message out.
  public mutating func clientStreaming(
    _ method: String,
    _ handler: @escaping @Sendable (_ requests: RequestStream, _ context: ServerContext) async throws -> [UInt8]
  ) {
    register(method, .clientStreaming(handler))
  }

  /// Both directions at once, independently.
  ///
  /// `resumable`: as for ``serverStreaming(_:resumable:_:)``; a checkpoint also records how many
  /// request messages the handler has read, and the client replays the ones after them.
  public mutating func bidirectional(
    _ method: String, resumable: Bool = false,
    _ handler:
      @escaping @Sendable (_ requests: RequestStream, _ responses: ResponseWriter, _ context: ServerContext)
      async throws -> Void
  ) {
    register(method, .bidirectional(handler))
    markResumable(method, resumable)
  }

  private mutating func markResumable(_ method: String, _ resumable: Bool) {
    if resumable { resumableMethods.insert(method) } else { resumableMethods.remove(method) }
  }

  /// A unary method whose messages are JSON-encoded `Codable` values. A request that does not
  /// decode fails the call with `invalidArgument`.
  public mutating func unary<Request: Decodable & Sendable, Response: Encodable & Sendable>(
    _ method: String, request: Request.Type, response: Response.Type,
    _ handler: @escaping @Sendable (_ request: Request, _ context: ServerContext) async throws -> Response
  ) {
    unary(method) { bytes, context in
      let request = try JSONMessageCoding.decode(Request.self, from: bytes)
      return try JSONMessageCoding.encode(try await handler(request, context))
    }
  }
}

/// The `Codable` convenience's message format: JSON, so any language can speak it.
public enum JSONMessageCoding {
  /// JSON bytes of `value`, as the Codable conveniences send them.
  public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
    do {
      return Array(try JSONEncoder().encode(value))
    } catch {
      throw RPCError(code: .internal, message: "could not encode \(T.self) as JSON: \(error)", cause: error)
    }
  }

  /// A value decoded from JSON bytes; throws INVALID_ARGUMENT-worthy errors for bad input.
  public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
    do {
      return try JSONDecoder().decode(T.self, from: Data(bytes))
    } catch {
      throw RPCError(
        code: .invalidArgument, message: "the message is not a valid JSON \(T.self): \(error)", cause: error)
    }
  }
}
