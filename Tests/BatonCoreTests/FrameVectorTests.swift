import BatonCore
import Testing

/// The shared conformance vectors of `Protocol/vectors/frames.json` (PROTOCOL.md section 17), run
/// through ``FrameDecoder`` and ``FrameEncoder``, whole and drip-fed through an ``InboundBuffer``.
@Suite("Frame vectors")
struct FrameVectorTests {
  static let file: FramesFile? = try? Vectors.frames()
  static var valid: [ValidVector] { file?.valid ?? [] }
  static var sequences: [SequenceVector] { file?.sequences ?? [] }
  static var invalid: [InvalidVector] { file?.invalid ?? [] }

  static let defaultDecoder = FrameDecoder(settings: .defaults)

  static func decoder(for vector: InvalidVector) -> FrameDecoder {
    FrameDecoder(
      maxFrameSize: vector.maxFrameSize ?? ConnectionSettings.defaults.maxFrameSize,
      maxMetadataSize: vector.maxMetadataSize ?? ConnectionSettings.defaults.maxMetadataSize)
  }

  @Test("the vector file loads, is version 1, and holds every vector it held when these tests were written")
  func vectorFileIsComplete() throws {
    let file = try Vectors.frames()
    #expect(file.version == 1)
    #expect(file.defaults.maxFrameSize == ConnectionSettings.defaults.maxFrameSize)
    #expect(file.defaults.maxMetadataSize == ConnectionSettings.defaults.maxMetadataSize)
    #expect(file.valid.count >= 48)
    #expect(file.sequences.count >= 7)
    #expect(file.invalid.count >= 76)
    #expect(file.valid.filter(\.decodeOnly).count >= 15)
    #expect(file.invalid.filter { $0.error.scope == "stream" }.count >= 39)
    // Every frame type appears among the valid vectors.
    let types = Set(file.valid.map(\.frame.type))
    #expect(
      types == [
        "DATA", "OPEN", "HEADERS", "TRAILERS", "RESET", "SETTINGS", "PING", "GOAWAY", "WINDOW_UPDATE", "CHECKPOINT",
      ])
  }

  @Test("the decoder's defaults match the vectors' defaults")
  func decoderDefaults() {
    let decoder = FrameDecoder(settings: .defaults)
    #expect(decoder.maxFrameSize == 65_536)
    #expect(decoder.maxMetadataSize == 16_384)
  }

  // MARK: - Valid

  @Test("the worked example's OPEN, written out field by field, decodes and re-encodes byte for byte (PROTOCOL.md 7.4)")
  func annotatedOpen() {
    let bytes: [UInt8] =
      [
        0x00, 0x00, 0x2A,  // length 42
        0x01,  // type OPEN
        0x00,  // flags: none
        0x00, 0x00, 0x00, 0x01,  // stream 1
        0x00, 0x0F,  // method_len 15
      ] + Array("echo.Echo/Unary".utf8) + [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x0F, 0x42, 0x40,  // timeout_us 1,000,000
        0x00, 0x01,  // metadata count 1
        0x00, 0x08,  // name_len 8
      ] + Array("trace-id".utf8) + [
        0x00, 0x03,  // value_len 3
      ] + Array("abc".utf8)
    let frame = Frame.open(
      streamID: 1,
      RequestHead(method: "echo.Echo/Unary", timeoutMicroseconds: 1_000_000, metadata: ["trace-id": "abc"]),
      endStream: false)
    #expect(Self.defaultDecoder.decodeResult(bytes) == .success(.frame(frame, consumed: 51)))
    #expect(encode(frame) == bytes)
  }

  @Test("a final GOAWAY, written out field by field, decodes and re-encodes byte for byte")
  func annotatedGoAway() {
    let bytes: [UInt8] = [
      0x00, 0x00, 0x0B,  // length 11
      0x07,  // type GOAWAY
      0x00,  // flags: none
      0x00, 0x00, 0x00, 0x00,  // stream 0
      0x00, 0x00, 0x00, 0x05,  // last_stream_id 5
      0x00, 0x00, 0x00, 0x00,  // NO_ERROR
      0x62, 0x79, 0x65,  // debug "bye"
    ]
    let frame = Frame.goAway(lastStreamID: 5, .noError, debug: "bye")
    #expect(Self.defaultDecoder.decodeResult(bytes) == .success(.frame(frame, consumed: bytes.count)))
    #expect(encode(frame) == bytes)
  }

  @Test("decoding a valid vector yields exactly its frame and consumes every byte", arguments: valid)
  func decodeValid(_ vector: ValidVector) throws {
    let bytes = [UInt8](hex: vector.hex)
    let expected = try vector.frame.frame()
    #expect(Self.defaultDecoder.decodeResult(bytes) == .success(.frame(expected, consumed: bytes.count)))
  }

  @Test(
    "encoding a valid vector's frame yields exactly its bytes (unless decode-only)",
    arguments: valid.filter { !$0.decodeOnly })
  func encodeValid(_ vector: ValidVector) throws {
    let frame = try vector.frame.frame()
    var bytes: [UInt8] = [0xEE]  // the encoder appends; it must not touch what is already there
    FrameEncoder.encode(frame, into: &bytes)
    #expect(bytes.first == 0xEE)
    #expect(Array(bytes.dropFirst()).hex == vector.hex)
  }

  @Test(
    "a decode-only vector re-encodes to its normalised form, which decodes to the same frame",
    arguments: valid.filter(\.decodeOnly))
  func decodeOnlyNormalises(_ vector: ValidVector) throws {
    let frame = try vector.frame.frame()
    let canonical = encode(frame)
    #expect(canonical.hex != vector.hex, "decode-only input is something an encoder never writes")
    #expect(Self.defaultDecoder.decodeResult(canonical) == .success(.frame(frame, consumed: canonical.count)))
  }

  @Test("a valid vector fed one byte at a time needs more bytes until its last byte", arguments: valid)
  func dripFeedValid(_ vector: ValidVector) throws {
    let bytes = [UInt8](hex: vector.hex)
    let expected = try vector.frame.frame()
    var buffer = InboundBuffer(capacity: 64)
    for (index, byte) in bytes.enumerated() {
      buffer.append([byte])
      let result = buffer.read { raw in
        let result = Result { () throws(WireError) in try Self.defaultDecoder.decode(raw) }
        guard case .success(.frame(_, let consumed)) = result else { return (0, result) }
        return (consumed, result)
      }
      if index < bytes.count - 1 {
        #expect(result == .success(.needMore), "after \(index + 1) of \(bytes.count) bytes")
        if result != .success(.needMore) { return }
      } else {
        #expect(result == .success(.frame(expected, consumed: bytes.count)))
      }
    }
    #expect(buffer.readableCount == 0)
  }

  @Test("a valid vector followed by unrelated bytes decodes to the same frame and leaves those bytes", arguments: valid)
  func decodeWithTrailingBytes(_ vector: ValidVector) throws {
    let bytes = [UInt8](hex: vector.hex)
    let expected = try vector.frame.frame()
    let trailing = bytes + [0x00, 0x00, 0x00]  // the start of another header
    #expect(Self.defaultDecoder.decodeResult(trailing) == .success(.frame(expected, consumed: bytes.count)))
  }

  // MARK: - Sequences

  @Test("decoding a sequence yields its frames in order", arguments: sequences)
  func decodeSequence(_ vector: SequenceVector) throws {
    let bytes = [UInt8](hex: vector.hex)
    let expected = try vector.frames.map { try $0.frame() }
    #expect(expected.count >= 1)
    var decoded: [Frame] = []
    var offset = 0
    while offset < bytes.count {
      let result = Self.defaultDecoder.decodeResult(Array(bytes[offset...]))
      guard case .success(.frame(let frame, let consumed)) = result, consumed > 0 else {
        Issue.record("at byte \(offset): \(result)")
        return
      }
      decoded.append(frame)
      offset += consumed
    }
    #expect(decoded == expected)
  }

  @Test("a sequence fed one byte at a time yields its frames in order", arguments: sequences)
  func dripFeedSequence(_ vector: SequenceVector) throws {
    let bytes = [UInt8](hex: vector.hex)
    let expected = try vector.frames.map { try $0.frame() }
    var buffer = InboundBuffer(capacity: 64)
    var decoded: [Frame] = []
    for byte in bytes {
      buffer.append([byte])
      while true {
        let result = buffer.read { raw in
          let result = Result { () throws(WireError) in try Self.defaultDecoder.decode(raw) }
          guard case .success(.frame(_, let consumed)) = result else { return (0, result) }
          return (consumed, result)
        }
        guard case .success(.frame(let frame, _)) = result else {
          #expect(result == .success(.needMore))
          break
        }
        decoded.append(frame)
      }
    }
    #expect(decoded == expected)
    #expect(buffer.readableCount == 0)
  }

  @Test("encoding a sequence's frames yields its bytes", arguments: sequences)
  func encodeSequence(_ vector: SequenceVector) throws {
    let frames = try vector.frames.map { try $0.frame() }
    #expect(encode(frames).hex == vector.hex)
  }

  // MARK: - Invalid

  static func matches(_ result: Swift.Result<FrameDecoder.Outcome, WireError>, _ vector: InvalidVector, length: Int)
    -> Bool
  {
    guard let code = ErrorCode(name: vector.error.code) else { return false }
    switch (vector.error.scope, result) {
    case ("connection", .failure(let error)):
      return error.scope == .connection && error.code == code
    case ("stream", .success(.streamError(let error, let consumed))):
      guard let id = vector.error.streamId else { return false }
      return error.scope == .stream(id) && error.code == code && consumed == length
    default:
      return false
    }
  }

  @Test("every invalid vector names a known scope, code and (for stream errors) stream", arguments: invalid)
  func invalidVectorIsWellFormed(_ vector: InvalidVector) {
    #expect(ErrorCode(name: vector.error.code) != nil)
    #expect(["connection", "stream"].contains(vector.error.scope))
    #expect((vector.error.scope == "stream") == (vector.error.streamId != nil))
  }

  @Test("decoding an invalid vector fails with its scope and code", arguments: invalid)
  func decodeInvalid(_ vector: InvalidVector) {
    let bytes = [UInt8](hex: vector.hex)
    let result = Self.decoder(for: vector).decodeResult(bytes)
    #expect(Self.matches(result, vector, length: bytes.count), "got \(result), want \(vector.error)")
  }

  @Test(
    "an invalid vector fed one byte at a time needs more bytes, then fails no later than its last byte",
    arguments: invalid)
  func dripFeedInvalid(_ vector: InvalidVector) {
    let bytes = [UInt8](hex: vector.hex)
    let decoder = Self.decoder(for: vector)
    var buffer = InboundBuffer(capacity: 64)
    for (index, byte) in bytes.enumerated() {
      buffer.append([byte])
      let result = buffer.read { raw in
        (0, Result { () throws(WireError) in try decoder.decode(raw) })
      }
      if result == .success(.needMore) {
        #expect(index < bytes.count - 1, "still waiting for bytes once the whole frame is there")
        continue
      }
      #expect(Self.matches(result, vector, length: bytes.count), "after \(index + 1) bytes: \(result)")
      return
    }
  }

  /// The frame-size vectors: a header whose length exceeds the limit, and nothing else.
  static var oversized: [InvalidVector] {
    invalid.filter { vector in
      let bytes = [UInt8](hex: vector.hex)
      guard bytes.count == FrameEncoder.headerLength else { return false }
      let length = Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2])
      return length > Int(vector.maxFrameSize ?? ConnectionSettings.defaults.maxFrameSize)
    }
  }

  @Test("there are header-only frame-size vectors")
  func oversizedVectorsExist() {
    #expect(Self.oversized.count >= 3)
  }

  @Test("an oversized length is rejected from the 9-byte header, before any payload", arguments: oversized)
  func frameSizeFromHeaderAlone(_ vector: InvalidVector) {
    let header = [UInt8](hex: vector.hex)
    let decoder = Self.decoder(for: vector)
    #expect(decoder.decodeResult(Array(header.prefix(8))) == .success(.needMore))
    #expect(Self.matches(decoder.decodeResult(header), vector, length: header.count))
  }

  @Test("a payload that exactly fills MAX_FRAME_SIZE is accepted; one byte more is FRAME_SIZE_ERROR")
  func frameSizeBoundary() {
    let decoder = FrameDecoder(maxFrameSize: 1024, maxMetadataSize: 16_384)
    let fits = encode(
      .data(streamID: 1, payload: [UInt8](repeating: 7, count: 1024), endMessage: true, endStream: false))
    #expect(
      decoder.decodeResult(fits)
        == .success(
          .frame(
            .data(streamID: 1, payload: [UInt8](repeating: 7, count: 1024), endMessage: true, endStream: false),
            consumed: fits.count)))
    let tooBig = encode(
      .data(streamID: 1, payload: [UInt8](repeating: 7, count: 1025), endMessage: true, endStream: false))
    guard case .failure(let error) = decoder.decodeResult(tooBig) else {
      Issue.record("1025-byte payload accepted with MAX_FRAME_SIZE 1024")
      return
    }
    #expect(error.code == .frameSizeError)
    #expect(error.scope == .connection)
  }

  @Test("a stream error on a malformed OPEN names the frame type, so the id still counts as used")
  func streamErrorCarriesFrameType() throws {
    let vector = try #require(Self.invalid.first { $0.name == "open_empty_method" })
    let result = FrameDecoder(settings: .defaults).decodeResult([UInt8](hex: vector.hex))
    guard case .success(.streamError(let error, _)) = result else {
      Issue.record("expected a stream error, got \(result)")
      return
    }
    #expect(error.frameType == FrameType.open)
  }

  @Test("an OPEN for the method just seen shares its name; any other method replaces it; bad UTF-8 is still refused")
  func recentMethodName() throws {
    // Longer than 15 bytes, so that each decoded name has its own heap storage.
    let name = "bench.Echo/UnaryCall"
    var recent = ""
    let first = try #require(try Self.method(Self.open(Array(name.utf8), stream: 1), &recent))
    #expect(first == name && recent == name)
    let second = try #require(try Self.method(Self.open(Array(name.utf8), stream: 3), &recent))
    #expect(second == name)
    let address = { (string: String) in string.utf8.withContiguousStorageIfAvailable { $0.baseAddress } ?? nil }
    #expect(address(second) == address(first), "the second OPEN reuses the first one's string")

    let other = try #require(try Self.method(Self.open(Array("bench.Echo/UnaryCalm".utf8), stream: 5), &recent))
    #expect(other == "bench.Echo/UnaryCalm" && recent == other)
    // Same length, different in the first eight bytes rather than in the tail.
    let early = try #require(try Self.method(Self.open(Array("benxh.Echo/UnaryCalm".utf8), stream: 9), &recent))
    #expect(early == "benxh.Echo/UnaryCalm" && recent == early)

    let invalid = try Self.open([0x61, 0xFF, 0x62], stream: 7).withUnsafeBytes { raw throws(WireError) in
      try Self.defaultDecoder.decode(raw, recentMethod: &recent)
    }
    guard case .streamError(let error, _) = invalid else {
      Issue.record("invalid UTF-8 in a method name decoded as \(invalid)")
      return
    }
    #expect(error.code == .protocolError)
    #expect(recent == "benxh.Echo/UnaryCalm", "a refused name does not replace the recent one")
  }

  @Test("a recent method name is never taken for another of the same length", arguments: [1, 7, 8, 9, 16, 23])
  func recentMethodNameDiffersAnywhere(length: Int) throws {
    let first = String(repeating: "m", count: length)
    for position in 0..<length {
      var other = Array(first.utf8)
      other[position] = UInt8(ascii: "n")
      var recent = first
      let decoded = try #require(try Self.method(Self.open(other, stream: 1), &recent))
      #expect(Array(decoded.utf8) == other && Array(recent.utf8) == other, "byte \(position) of \(length)")
    }
  }

  private static func open(_ method: [UInt8], stream: UInt8) -> [UInt8] {
    let length = 2 + method.count + 10
    return [0, 0, UInt8(length), FrameType.open, 0, 0, 0, 0, stream, 0, UInt8(method.count)]
      + method + [UInt8](repeating: 0, count: 10)  // timeout 0, no metadata
  }

  private static func method(_ bytes: [UInt8], _ recent: inout String) throws -> String? {
    let outcome = try bytes.withUnsafeBytes { raw throws(WireError) in
      try Self.defaultDecoder.decode(raw, recentMethod: &recent)
    }
    guard case .frame(.open(_, let head, _), _) = outcome else { return nil }
    return head.method
  }
}
