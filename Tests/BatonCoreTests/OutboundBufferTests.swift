import BatonCore
import Testing

@Suite("OutboundBuffer")
struct OutboundBufferTests {
  /// A payload whose bytes tell where they came from, so that a misplaced piece shows.
  static func payload(_ count: Int, seed: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed &* 13) }
  }

  /// Where two byte strings first differ (nil if they are equal): a readable failure, where
  /// printing 80 KB arrays would not be.
  static func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
    if let index = zip(a, b).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset { return index }
    return a.count == b.count ? nil : min(a.count, b.count)
  }

  /// Frames of every kind of size: copied, exactly at the threshold, referenced, and fragments
  /// that are slices starting inside their message. Returns the buffer and the same frames
  /// encoded the plain way, every payload copied.
  static func mixed() -> (OutboundBuffer, [UInt8]) {
    var buffer = OutboundBuffer()
    var plain: [UInt8] = []
    let threshold = OutboundBuffer.referenceThreshold
    let sizes = [0, 64, threshold - 1, threshold, threshold + 1, 4_096, 3, 70_000, 5]
    for (index, size) in sizes.enumerated() {
      let message = payload(size, seed: index)
      let id = UInt32(index * 2 + 1)
      buffer.appendData(streamID: id, payload: message, endMessage: true, endStream: false)
      FrameEncoder.appendData(&plain, streamID: id, payload: message, endMessage: true, endStream: false)
      FrameEncoder.appendWindowUpdate(&buffer.frameBytes, streamID: id, increment: 9)
      FrameEncoder.appendWindowUpdate(&plain, streamID: id, increment: 9)
    }
    let fragmented = payload(3 * threshold, seed: 99)
    for cut in [0..<10, 10..<(threshold + 10), (threshold + 10)..<(3 * threshold)] {
      buffer.appendData(
        streamID: 41, payload: fragmented[cut], endMessage: cut.upperBound == fragmented.count, endStream: false)
      FrameEncoder.appendData(
        &plain, streamID: 41, payload: fragmented[cut], endMessage: cut.upperBound == fragmented.count, endStream: false
      )
    }
    return (buffer, plain)
  }

  @Test("the bytes on the wire are the same whether payloads are copied or referenced")
  func sameBytes() {
    let (buffer, plain) = Self.mixed()
    #expect(Self.firstDifference(buffer.flattened, plain) == nil)
    #expect(buffer.count == plain.count)
    // Referenced: the threshold, above it, 4 KiB, 70,000, and the two large fragments.
    #expect(buffer.referenceCount == 6)
  }

  @Test("a small payload is copied, one at the threshold is referenced")
  func threshold() {
    var buffer = OutboundBuffer()
    buffer.appendData(
      streamID: 1, payload: Self.payload(OutboundBuffer.referenceThreshold - 1, seed: 1), endMessage: true,
      endStream: false)
    #expect(buffer.referenceCount == 0)
    #expect(buffer.frameBytes.count == FrameEncoder.headerLength + OutboundBuffer.referenceThreshold - 1)
    buffer.appendData(
      streamID: 1, payload: Self.payload(OutboundBuffer.referenceThreshold, seed: 2), endMessage: true, endStream: false
    )
    #expect(buffer.referenceCount == 1)
    #expect(buffer.frameBytes.count == 2 * FrameEncoder.headerLength + OutboundBuffer.referenceThreshold - 1)
  }

  @Test(
    "written in pieces of any size, with any cap on segments, the stream comes out whole and in order",
    arguments: [1, 2, 3, 128])
  func partialWrites(maxSegments: Int) {
    let (buffer, plain) = Self.mixed()
    for step in [1, 7, 1_000, 4_096, 65_536, plain.count] {
      var out: [UInt8] = []
      var offset = 0
      while offset < buffer.count {
        // A write that takes at most `step` bytes of what it is offered, like a full socket.
        let taken = buffer.withSegments(from: offset, maxSegments: maxSegments) { pieces -> Int in
          #expect(!pieces.isEmpty && pieces.count <= maxSegments)
          #expect(pieces.allSatisfy { !$0.isEmpty })
          var left = step
          for piece in pieces where left > 0 {
            let n = min(left, piece.count)
            out.append(contentsOf: piece[..<n])
            left -= n
          }
          return step - left
        }
        offset += taken
      }
      #expect(Self.firstDifference(out, plain) == nil, "step \(step)")
    }
    #expect(buffer.withSegments(from: buffer.count, maxSegments: maxSegments) { $0.isEmpty })
  }

  @Test("appending a buffer shifts its references after what is already there")
  func appendBuffer() {
    let (first, firstPlain) = Self.mixed()
    var second = OutboundBuffer()
    second.appendData(streamID: 3, payload: Self.payload(2_000, seed: 5), endMessage: true, endStream: false)
    FrameEncoder.appendReset(&second.frameBytes, streamID: 3, code: .cancel)
    var joined = first
    joined.append(contentsOf: second)
    #expect(Self.firstDifference(joined.flattened, firstPlain + second.flattened) == nil)
    #expect(joined.count == first.count + second.count)
    #expect(joined.referenceCount == first.referenceCount + 1)
    joined.removeAll(keepingCapacity: true)
    #expect(joined.isEmpty && joined.count == 0 && joined.referenceCount == 0)
  }
}
