import BatonCore
import Testing

@Suite("RPCError")
struct RPCErrorTests {
  @Test("wire status 0 (OK) is no error")
  func okIsNil() {
    #expect(RPCError.Code(wireStatus: 0) == nil)
    #expect(Trailers.ok.error == nil)
    #expect(Trailers.ok.status == 0)
  }

  @Test("wire statuses 1...16 map to the gRPC code of the same number", arguments: 1...16)
  func knownStatuses(_ status: Int) throws {
    let code = try #require(RPCError.Code(wireStatus: UInt8(status)))
    #expect(code.rawValue == UInt8(status))
  }

  @Test("statuses this version does not know become UNKNOWN", arguments: [17, 99, 200, 255])
  func unknownStatuses(_ status: Int) {
    #expect(RPCError.Code(wireStatus: UInt8(status)) == .unknown)
  }

  @Test("the named codes carry gRPC's numbers")
  func numbering() {
    let codes: [RPCError.Code] = [
      .cancelled, .unknown, .invalidArgument, .deadlineExceeded, .notFound, .alreadyExists, .permissionDenied,
      .resourceExhausted, .failedPrecondition, .aborted, .outOfRange, .unimplemented, .internal, .unavailable,
      .dataLoss, .unauthenticated,
    ]
    #expect(codes.map(\.rawValue) == Array(1...16))
    #expect(RPCError.Code.unavailable.description == "unavailable")
    #expect(RPCError.Code.deadlineExceeded.description == "deadlineExceeded")
  }

  @Test("non-OK trailers become an RPCError with their message and metadata, and back")
  func trailersRoundTrip() throws {
    let trailers = Trailers(status: 14, message: "server is stopping", metadata: ["retry-after-ms": "100"])
    let error = try #require(trailers.error)
    #expect(error.code == .unavailable)
    #expect(error.message == "server is stopping")
    #expect(error.metadata == ["retry-after-ms": "100"])
    #expect(Trailers(error) == trailers)
    #expect(error.description == "unavailable: server is stopping")
  }

  @Test("trailers with a status this version does not know report UNKNOWN")
  func unknownTrailers() {
    #expect(Trailers(status: 200, message: "teapot").error?.code == .unknown)
  }

  @Test("cause is kept for the caller but is not part of equality, hashing or the wire")
  func cause() throws {
    struct Underneath: Error, Equatable { var errno: Int32 }
    let error = RPCError(code: .unavailable, message: "could not listen", cause: Underneath(errno: 98))
    #expect((error.cause as? Underneath) == Underneath(errno: 98))
    let plain = RPCError(code: .unavailable, message: "could not listen")
    #expect(error == plain)
    #expect(Set([error, plain]).count == 1)
    #expect(Trailers(error).error?.cause == nil)
  }
}
