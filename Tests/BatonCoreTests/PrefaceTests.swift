import BatonCore
import Testing

/// `Protocol/vectors/preface.json` against ``Preface/validate(_:)`` and against a
/// ``ConnectionCore`` receiving the bytes (PROTOCOL.md section 3.1).
@Suite("Preface")
struct PrefaceTests {
  static let file: PrefaceFile? = try? Vectors.preface()
  static var valid: [PrefaceFile.Valid] { file?.valid ?? [] }
  static var invalid: [PrefaceFile.Invalid] { file?.invalid ?? [] }

  @Test("the preface vector file loads and holds every vector it held when these tests were written")
  func vectorFileIsComplete() throws {
    let file = try Vectors.preface()
    #expect(file.version == 1)
    #expect(file.valid.count >= 1)
    #expect(file.invalid.count >= 8)
    #expect(file.invalid.contains { $0.error.code == "UNSUPPORTED_VERSION" })
    #expect(file.invalid.contains { $0.error.code == "PROTOCOL_ERROR" })
  }

  @Test("the preface is BATON CR LF and version 1")
  func prefaceBytes() {
    #expect(Preface.bytes == [0x42, 0x41, 0x54, 0x4F, 0x4E, 0x0D, 0x0A, 0x01])
    #expect(Preface.length == 8)
  }

  @Test("Preface.validate accepts a valid preface", arguments: valid)
  func validPreface(_ vector: PrefaceFile.Valid) throws {
    let bytes = [UInt8](hex: vector.hex)
    try Preface.validate(bytes.prefix(Preface.length))
    #expect(bytes.count == Preface.length)
  }

  @Test("Preface.validate rejects an invalid preface with the named connection error", arguments: invalid)
  func invalidPreface(_ vector: PrefaceFile.Invalid) throws {
    let bytes = [UInt8](hex: vector.hex)
    let code = try #require(ErrorCode(name: vector.error.code))
    #expect(vector.error.scope == "connection")
    let error = #expect(throws: WireError.self) { try Preface.validate(bytes.prefix(Preface.length)) }
    #expect(error?.code == code)
    #expect(error?.scope == .connection)
  }

  @Test("Preface.validate rejects fewer or more than 8 bytes", arguments: [0, 1, 7, 9])
  func wrongLength(_ count: Int) {
    let bytes = Array((Preface.bytes + [0x00]).prefix(count))
    let error = #expect(throws: WireError.self) { try Preface.validate(bytes) }
    #expect(error?.code == .protocolError)
  }

  @Test("a connection accepts a valid preface fed one byte at a time and then waits for SETTINGS", arguments: valid)
  func connectionAcceptsPreface(_ vector: PrefaceFile.Valid) {
    var server = Driven(.server)
    let events = server.receiveByteByByte([UInt8](hex: vector.hex))
    #expect(events.isEmpty)
    #expect(server.core.phase == .awaitingSettings)
    #expect(server.unusedInput == 0)
  }

  @Test(
    "a connection rejects an invalid preface with the named code no later than the first wrong byte", arguments: invalid
  )
  func connectionRejectsPreface(_ vector: PrefaceFile.Invalid) throws {
    let bytes = [UInt8](hex: vector.hex)
    let code = try #require(ErrorCode(name: vector.error.code))
    // Where the input first departs from a good preface: the core must have failed by then.
    let firstWrong = try #require(zip(bytes, Preface.bytes).enumerated().first { $0.element.0 != $0.element.1 }?.offset)
    var server = Driven(.server)
    _ = server.written()
    for (index, byte) in bytes.enumerated() {
      let events = server.receive([byte])
      if index < firstWrong {
        #expect(events.isEmpty, "after \(index + 1) good bytes")
        continue
      }
      #expect(events.seen == [.connectionError(code)], "after byte \(index + 1); first wrong byte is \(firstWrong + 1)")
      break
    }
    #expect(server.core.phase == .closed)
    // The GOAWAY follows the server's own preface and SETTINGS, so it is well-formed; last id 0.
    #expect(server.written().goAways == [StreamCode(0, code)])
  }
}
