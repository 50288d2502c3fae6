import GRPCCore

/// Messages are raw bytes (no protobuf), as in `baton bench`: the codec copies them and nothing else.
struct BytesSerializer: MessageSerializer {
  func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
}

struct BytesDeserializer: MessageDeserializer {
  func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> [UInt8] {
    bytes.withUnsafeBytes { Array($0) }
  }
}

/// `bench.Echo/Unary` answers with its request; `bench.Echo/Stream` echoes every message it gets.
enum Echo {
  static let service = ServiceDescriptor(package: "bench", service: "Echo")
  static let unary = MethodDescriptor(service: service, method: "Unary")
  static let stream = MethodDescriptor(service: service, method: "Stream")
}

/// The service, registered by hand (no code generation).
struct EchoService: RegistrableRPCService {
  func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
    router.registerHandler(
      forMethod: Echo.unary, deserializer: BytesDeserializer(), serializer: BytesSerializer()
    ) { request, _ in
      let single = try await ServerRequest(stream: request)
      return StreamingServerResponse(single: ServerResponse(message: single.message))
    }
    router.registerHandler(
      forMethod: Echo.stream, deserializer: BytesDeserializer(), serializer: BytesSerializer()
    ) { request, _ in
      StreamingServerResponse { writer in
        for try await message in request.messages {
          try await writer.write(message)
        }
        return [:]
      }
    }
  }
}
