import BatonCore
import Testing

/// ``FrameDecoder/wholeData(_:)``, the decoder's no-copy path for DATA frames, and the core's
/// `messageBytes` events built on it. The path skips ``FrameDecoder/decode(_:recentMethod:)``, so
/// these tests hold it to the same verdict on every input: the same frame where decode finds a
/// valid DATA frame, and nil (decode judges) everywhere else.
@Suite("Whole DATA frames in place")
struct WholeDataTests {
  private static func wholeData(_ decoder: FrameDecoder, _ bytes: [UInt8]) -> FrameDecoder.WholeData? {
    bytes.withUnsafeBytes { decoder.wholeData($0) }
  }

  /// What `decode` makes of the same bytes, in `wholeData`'s terms (nil unless a DATA frame).
  private static func viaDecode(_ decoder: FrameDecoder, _ bytes: [UInt8]) -> FrameDecoder.WholeData?? {
    guard case .success(.frame(let frame, let consumed)) = decoder.decodeResult(bytes) else { return .some(nil) }
    guard case .data(let id, let payload, let endMessage, let endStream) = frame else { return .some(nil) }
    let range = (consumed - payload.count)..<consumed
    guard Array(bytes[range]) == payload else { return nil }  // payload not where the frame ends
    return .some(FrameDecoder.WholeData(streamID: id, payload: range, endMessage: endMessage, endStream: endStream))
  }

  @Test(
    "every valid vector: a DATA frame is found in place exactly as decode reads it; anything else is left to decode",
    arguments: FrameVectorTests.valid)
  func validVectors(_ vector: ValidVector) throws {
    let bytes = [UInt8](hex: vector.hex)
    let expected = try #require(Self.viaDecode(FrameVectorTests.defaultDecoder, bytes))
    #expect(Self.wholeData(FrameVectorTests.defaultDecoder, bytes) == expected)
    if case .data = try vector.frame.frame() { #expect(expected != nil, "a DATA vector is found in place") }
  }

  @Test("every invalid vector is left to decode, which rejects it", arguments: FrameVectorTests.invalid)
  func invalidVectors(_ vector: InvalidVector) {
    #expect(Self.wholeData(FrameVectorTests.decoder(for: vector), [UInt8](hex: vector.hex)) == nil)
  }

  @Test("DATA frames of every flag, size class and stream id, whole, cut short, and with bytes after them")
  func shapes() {
    let decoder = FrameDecoder(maxFrameSize: 4_096, maxMetadataSize: 1_024)
    var checked = 0
    for size in [0, 1, 63, 64, 1_023, 1_024, 4_095, 4_096] {
      for id: UInt32 in [1, 2, 0x7FFF_FFFF] {
        for (endMessage, endStream) in [(true, false), (false, false), (true, true), (false, true)] {
          let frame = encode(
            .data(
              streamID: id, payload: pattern(size, seed: UInt8(size & 0xFF)), endMessage: endMessage,
              endStream: endStream))
          let expected = FrameDecoder.WholeData(
            streamID: id, payload: FrameEncoder.headerLength..<frame.count, endMessage: endMessage, endStream: endStream
          )
          #expect(Self.wholeData(decoder, frame) == expected)
          #expect(Self.wholeData(decoder, frame + [0, 1, 2]) == expected, "bytes after the frame are not its own")
          for cut in [0, 1, 8, 9, frame.count - 1] where cut < frame.count && cut >= 0 {
            #expect(Self.wholeData(decoder, Array(frame.prefix(cut))) == nil, "\(size) bytes cut to \(cut)")
          }
          checked += 1
        }
      }
    }
    #expect(checked == 96)
    // The reserved high bit of the stream id is ignored, as decode ignores it.
    var highBit = encode(.data(streamID: 5, payload: [1], endMessage: true, endStream: false))
    highBit[5] |= 0x80
    #expect(Self.wholeData(decoder, highBit)?.streamID == 5)
  }

  @Test("DATA that breaks a rule is left to decode: stream 0, and one byte over MAX_FRAME_SIZE")
  func brokenData() {
    let decoder = FrameDecoder(maxFrameSize: 1_024, maxMetadataSize: 1_024)
    let onZero = encode(.data(streamID: 0, payload: [1, 2], endMessage: true, endStream: false))
    #expect(Self.wholeData(decoder, onZero) == nil)
    if case .success(let outcome) = decoder.decodeResult(onZero) {
      Issue.record("decode accepted DATA on stream 0: \(outcome)")
    }
    let tooLarge = encode(.data(streamID: 1, payload: pattern(1_025), endMessage: true, endStream: false))
    #expect(Self.wholeData(decoder, tooLarge) == nil)
    #expect(Self.wholeData(decoder, Array(tooLarge.dropLast())) == nil)
    let fits = encode(.data(streamID: 1, payload: pattern(1_024), endMessage: true, endStream: false))
    #expect(Self.wholeData(decoder, fits)?.payload == FrameEncoder.headerLength..<fits.count)
  }

  @Test("random bytes: whenever a DATA frame is found in place, decode reads the same frame there")
  func randomBytes() {
    var generator = SplitMix(state: 0xDA7A)
    let decoder = FrameDecoder(maxFrameSize: 256, maxMetadataSize: 256)
    var found = 0
    for _ in 0..<20_000 {
      var bytes = (0..<Int(generator.next() % 40)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
      if bytes.count > 3, generator.next() % 2 == 0 {
        bytes[0] = 0
        bytes[1] = 0
        bytes[2] = UInt8(generator.next() % 40)
        bytes[3] = 0  // DATA
      }
      guard let inPlace = Self.wholeData(decoder, bytes) else { continue }
      found += 1
      #expect(Self.viaDecode(decoder, bytes) == .some(inPlace), "\(bytes.hex)")
    }
    #expect(found > 1_000, "the generator makes DATA frames often enough to test anything")
  }

  @Test(
    "the core reports a one-frame message in place, where it lies in the bytes given, and a fragmented one as its own array"
  )
  func coreEvents() {
    var server = Driven.ready(.server)
    server.receive(.open(streamID: 1, RequestHead(method: testMethod), endStream: false))
    let first = encode(dataFrame(1, pattern(10)))
    let second = encode(dataFrame(1, pattern(3, seed: 9)))
    let fragments = encode(dataFrame(1, [7, 7], endMessage: false), dataFrame(1, [8], endMessage: true))
    let input = first + second + fragments
    var events: [ConnectionEvent] = []
    let used = input.withUnsafeBytes { server.core.receive($0, into: &events) }
    #expect(used == input.count)
    let header = FrameEncoder.headerLength
    #expect(
      events == [
        .messageBytes(streamID: 1, header..<first.count),
        .messageBytes(streamID: 1, (first.count + header)..<(first.count + second.count)),
        .message(streamID: 1, [7, 7, 8]),
      ])
    #expect(
      events.resolved(in: input).seen == [
        .message(1, pattern(10)), .message(1, pattern(3, seed: 9)), .message(1, [7, 7, 8]),
      ])
  }
}
