import BatonCore
import Testing

@Suite("InboundBuffer")
struct InboundBufferTests {
  /// Reads everything readable without consuming it.
  static func peek(_ buffer: inout InboundBuffer) -> [UInt8] {
    buffer.read { raw in (0, Array(raw)) }
  }

  /// Consumes `count` bytes and returns them.
  @discardableResult
  static func take(_ count: Int, from buffer: inout InboundBuffer) -> [UInt8] {
    buffer.read { raw in (count, Array(raw.prefix(count))) }
  }

  @Test("a new buffer is empty with at least the requested capacity, and never below 64 bytes")
  func initialCapacity() {
    let big = InboundBuffer(capacity: 1000)
    #expect(big.readableCount == 0)
    #expect(big.capacity == 1000)
    #expect(InboundBuffer(capacity: 0).capacity == 64)
    #expect(InboundBuffer(capacity: 10).capacity == 64)
    #expect(InboundBuffer().capacity == 64 * 1024)
  }

  @Test("appended bytes are read back in order; read consumes only what the body reports")
  func appendAndRead() {
    var buffer = InboundBuffer(capacity: 64)
    buffer.append([1, 2, 3])
    buffer.append([4, 5])
    #expect(buffer.readableCount == 5)
    #expect(Self.peek(&buffer) == [1, 2, 3, 4, 5])
    #expect(buffer.readableCount == 5, "peeking consumes nothing")
    #expect(Self.take(2, from: &buffer) == [1, 2])
    #expect(buffer.readableCount == 3)
    #expect(Self.peek(&buffer) == [3, 4, 5])
    buffer.append([6])
    #expect(Self.peek(&buffer) == [3, 4, 5, 6])
  }

  @Test("read clamps a consumed count outside 0...readable")
  func readClampsConsumed() {
    var buffer = InboundBuffer(capacity: 64)
    buffer.append([1, 2, 3])
    buffer.read { _ in (-5, ()) }
    #expect(buffer.readableCount == 3)
    buffer.read { _ in (100, ()) }
    #expect(buffer.readableCount == 0)
  }

  @Test("write hands the body the free tail and keeps only what it reports written")
  func writeReportsWritten() {
    var buffer = InboundBuffer(capacity: 64)
    let written = buffer.write(minimumSpace: 8) { tail in
      #expect(tail.count >= 8)
      for index in 0..<4 { tail[index] = UInt8(10 + index) }
      return 4
    }
    #expect(written == 4)
    #expect(Self.peek(&buffer) == [10, 11, 12, 13])
    // A body that claims more than the tail holds is clamped.
    _ = buffer.write(minimumSpace: 0) { tail in tail.count + 100 }
    #expect(buffer.readableCount == buffer.capacity)
  }

  @Test("write rethrows the body's typed error and keeps nothing")
  func writeThrows() {
    struct Boom: Error, Equatable {}
    var buffer = InboundBuffer(capacity: 64)
    buffer.append([1])
    #expect(throws: Boom.self) {
      try buffer.write(minimumSpace: 4) { (_: UnsafeMutableRawBufferPointer) throws(Boom) -> Int in throw Boom() }
    }
    #expect(Self.peek(&buffer) == [1])
  }

  @Test("read rethrows the body's typed error and consumes nothing")
  func readThrows() {
    struct Boom: Error {}
    var buffer = InboundBuffer(capacity: 64)
    buffer.append([1, 2])
    #expect(throws: Boom.self) {
      try buffer.read { (_: UnsafeRawBufferPointer) throws(Boom) -> (consumed: Int, result: Void) in throw Boom() }
    }
    #expect(buffer.readableCount == 2)
  }

  @Test("the buffer grows (by doubling) to fit a frame larger than its capacity, keeping unread bytes")
  func growth() {
    var buffer = InboundBuffer(capacity: 64)
    let first = (0..<50).map { UInt8($0) }
    buffer.append(first)
    let big = (0..<200).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    buffer.append(big)
    #expect(buffer.capacity >= 250)
    #expect(buffer.capacity == 256, "64 doubled until 250 bytes fit")
    #expect(Self.peek(&buffer) == first + big)
  }

  @Test("when the tail is too small but the head has room, unread bytes move to the front instead of growing")
  func compaction() {
    var buffer = InboundBuffer(capacity: 64)
    buffer.append((0..<60).map { UInt8($0) })
    Self.take(50, from: &buffer)
    #expect(buffer.readableCount == 10)
    // 10 unread + 40 new = 50 <= 64: compaction suffices.
    buffer.append((100..<140).map { UInt8($0) })
    #expect(buffer.capacity == 64)
    #expect(Self.peek(&buffer) == (50..<60).map { UInt8($0) } + (100..<140).map { UInt8($0) })
  }

  @Test("compaction happens only when needed: a write that fits the tail leaves the buffer as it is")
  func noNeedlessCompaction() {
    var buffer = InboundBuffer(capacity: 64)
    buffer.append([1, 2, 3, 4])
    Self.take(2, from: &buffer)
    var tailSize = 0
    _ = buffer.write(minimumSpace: 1) { tail in
      tailSize = tail.count
      return 0
    }
    #expect(tailSize == 60, "the free tail starts after the 4 written bytes: nothing moved")
  }

  @Test("once everything is read, the next write starts again at the front")
  func resetWhenEmpty() {
    var buffer = InboundBuffer(capacity: 64)
    buffer.append((0..<60).map { UInt8($0) })
    Self.take(60, from: &buffer)
    var tailSize = 0
    _ = buffer.write(minimumSpace: 1) { tail in
      tailSize = tail.count
      return 0
    }
    #expect(tailSize == 64)
    buffer.append(Array(repeating: 9, count: 64))
    #expect(buffer.capacity == 64, "a full-capacity write fits once the read bytes are dropped")
  }

  @Test("interleaved writes and reads of many small frames, each leaving an incomplete tail, never grow the buffer")
  func steadyState() {
    var buffer = InboundBuffer(capacity: 64)
    var expected: [UInt8] = []
    var received: [UInt8] = []
    for round in 0..<1_000 {
      let chunk = (0..<(round % 13 + 1)).map { UInt8(truncatingIfNeeded: round &+ $0) }
      buffer.append(chunk)
      expected += chunk
      // Consume all but a short tail, as a decoder leaves the start of the next frame.
      let keep = min(buffer.readableCount, round % 5)
      received += Self.take(buffer.readableCount - keep, from: &buffer)
      #expect(buffer.readableCount == keep)
    }
    received += Self.take(buffer.readableCount, from: &buffer)
    #expect(received == expected)
    #expect(buffer.capacity == 64)
  }

  @Test("shrink gives memory back only when nothing is buffered")
  func shrink() {
    var buffer = InboundBuffer(capacity: 64)
    buffer.append(Array(repeating: 1, count: 1000))
    let grown = buffer.capacity
    #expect(grown >= 1000)
    buffer.shrink(to: 64)
    #expect(buffer.capacity == grown, "bytes are buffered: no shrink")
    Self.take(999, from: &buffer)
    buffer.shrink(to: 64)
    #expect(buffer.capacity == grown, "one byte is still buffered")
    Self.take(1, from: &buffer)
    buffer.shrink(to: 64)
    #expect(buffer.capacity == 64)
    #expect(buffer.readableCount == 0)
    buffer.append([7, 8])
    #expect(Self.peek(&buffer) == [7, 8])
    buffer.shrink(to: 4096)
    #expect(buffer.capacity == 64, "shrink never grows")
  }

  @Test("shrink keeps the same 64-byte floor as init, so the buffer can still grow afterwards")
  func shrinkFloor() {
    var buffer = InboundBuffer(capacity: 64)
    buffer.shrink(to: 0)
    // With capacity 0, growing by doubling never terminates: the next append would hang.
    #expect(buffer.capacity >= 64)
    if buffer.capacity > 0 {
      buffer.append([1])
      #expect(Self.peek(&buffer) == [1])
    }
  }
}
