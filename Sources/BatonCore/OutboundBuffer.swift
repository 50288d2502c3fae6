/// What a connection has to send, in wire order: encoded frames, with large message payloads
/// kept by reference rather than copied among them.
///
/// Why: a payload copied into the frame bytes is copied twice on its way out (once here, once
/// into the kernel), and a burst of them regrows the buffer each time. A payload of at least
/// ``referenceThreshold`` bytes is instead held as it came from the caller and sent with the
/// frame bytes around it in one gathered write (`writev`). Below the threshold, copying is
/// cheaper than one more buffer in that write.
///
/// The buffer is pure: it never touches a socket. ``withSegments(from:maxSegments:_:)`` lends
/// the pieces to whoever writes them.
public struct OutboundBuffer: Sendable {
  /// Payloads this large or larger are kept by reference.
  public static let referenceThreshold = 1_024

  /// A payload that goes after the first `offset` frame bytes (and the references before it).
  struct Reference: Sendable {
    let offset: Int
    let payload: ArraySlice<UInt8>
  }

  /// The encoded frames, and every payload smaller than ``referenceThreshold``.
  ///
  /// Frame encoders append here directly. Only appending is allowed: references point at
  /// offsets in these bytes.
  public var frameBytes: [UInt8] = []
  private var references: [Reference] = []
  private var referencedCount = 0

  public init() {}

  /// Every byte to send, frames and referenced payloads.
  public var count: Int { frameBytes.count + referencedCount }
  public var isEmpty: Bool { frameBytes.isEmpty && references.isEmpty }
  /// How many payloads are held by reference: each is one more segment to write.
  public var referenceCount: Int { references.count }
  /// The capacity of the frame bytes, which a connection trims after a burst.
  public var frameCapacity: Int { frameBytes.capacity }

  public mutating func reserveCapacity(_ frameCapacity: Int) {
    frameBytes.reserveCapacity(frameCapacity)
  }

  /// Adds a DATA frame carrying a whole message. A small payload is copied straight from the
  /// array (making a slice of it would cost a retain and release); a large one is referenced.
  @inlinable
  public mutating func appendData(streamID: UInt32, payload: [UInt8], endMessage: Bool, endStream: Bool) {
    if payload.count < Self.referenceThreshold {
      FrameEncoder.appendData(
        &frameBytes, streamID: streamID, payload: payload, endMessage: endMessage, endStream: endStream)
    } else {
      appendData(streamID: streamID, payload: payload[...], endMessage: endMessage, endStream: endStream)
    }
  }

  /// Adds a DATA frame: its header is encoded, and the payload copied if it is smaller than
  /// ``referenceThreshold``, else referenced.
  public mutating func appendData(
    streamID: UInt32, payload: ArraySlice<UInt8>, endMessage: Bool, endStream: Bool
  ) {
    guard payload.count >= Self.referenceThreshold else {
      return FrameEncoder.appendData(
        &frameBytes, streamID: streamID, payload: payload, endMessage: endMessage, endStream: endStream)
    }
    FrameEncoder.appendDataHeader(
      &frameBytes, streamID: streamID, length: payload.count, endMessage: endMessage, endStream: endStream)
    references.append(Reference(offset: frameBytes.count, payload: payload))
    referencedCount += payload.count
  }

  /// Appends everything `other` holds, after what this buffer holds.
  public mutating func append(contentsOf other: OutboundBuffer) {
    let shift = frameBytes.count
    frameBytes.append(contentsOf: other.frameBytes)
    for reference in other.references {
      references.append(Reference(offset: reference.offset + shift, payload: reference.payload))
    }
    referencedCount += other.referencedCount
  }

  /// Drops everything, releasing the referenced payloads; keeps the frame bytes' capacity if asked.
  public mutating func removeAll(keepingCapacity: Bool) {
    frameBytes.removeAll(keepingCapacity: keepingCapacity)
    references.removeAll(keepingCapacity: keepingCapacity)
    referencedCount = 0
  }

  /// All of it as one array, as it goes on the wire.
  public var flattened: [UInt8] {
    var result: [UInt8] = []
    result.reserveCapacity(count)
    var copied = 0
    for reference in references {
      result.append(contentsOf: frameBytes[copied..<reference.offset])
      result.append(contentsOf: reference.payload)
      copied = reference.offset
    }
    result.append(contentsOf: frameBytes[copied...])
    return result
  }

  /// Lends `body` the bytes from `offset` on, in order, as at most `maxSegments` contiguous
  /// pieces (all of them if that many suffice), valid only during the call: what one gathered
  /// write takes.
  public func withSegments<Result>(
    from offset: Int, maxSegments: Int,
    _ body: ([UnsafeRawBufferPointer]) throws -> Result
  ) rethrows -> Result {
    precondition(maxSegments > 0 && offset >= 0 && offset <= count)
    let plan = segments(from: offset, maxSegments: maxSegments)
    return try frameBytes.withUnsafeBytes { frames in
      var buffers: [UnsafeRawBufferPointer] = []
      buffers.reserveCapacity(plan.count)
      return try Self.pin(plan, 0, frames, references, &buffers, body)
    }
  }

  /// A piece of the wire stream: frame bytes, or part of a referenced payload.
  private enum Segment {
    case frames(Range<Int>)
    case payload(index: Int, Range<Int>)
  }

  /// The pieces from `offset` on, skipping empty ones.
  private func segments(from offset: Int, maxSegments: Int) -> [Segment] {
    var plan: [Segment] = []
    var skip = offset
    var copied = 0
    func add(_ segment: Segment, length: Int) -> Bool {
      if skip >= length {
        skip -= length
        return true
      }
      guard plan.count < maxSegments else { return false }
      switch segment {
      case .frames(let range): plan.append(.frames(range.lowerBound + skip..<range.upperBound))
      case .payload(let index, let range):
        plan.append(.payload(index: index, range.lowerBound + skip..<range.upperBound))
      }
      skip = 0
      return true
    }
    for (index, reference) in references.enumerated() {
      if reference.offset > copied {
        guard add(.frames(copied..<reference.offset), length: reference.offset - copied) else { return plan }
      }
      let payload = reference.payload.startIndex..<reference.payload.endIndex
      guard add(.payload(index: index, payload), length: payload.count) else { return plan }
      copied = reference.offset
    }
    if frameBytes.count > copied {
      _ = add(.frames(copied..<frameBytes.count), length: frameBytes.count - copied)
    }
    return plan
  }

  /// Pins each referenced payload in turn (nested, so that every piece stays valid) and then
  /// calls `body` with all the pieces. The nesting is as deep as the write has references.
  private static func pin<Result>(
    _ plan: [Segment], _ next: Int, _ frames: UnsafeRawBufferPointer, _ references: [Reference],
    _ buffers: inout [UnsafeRawBufferPointer], _ body: ([UnsafeRawBufferPointer]) throws -> Result
  ) rethrows -> Result {
    var index = next
    while index < plan.count {
      switch plan[index] {
      case .frames(let range):
        buffers.append(UnsafeRawBufferPointer(rebasing: frames[range]))
        index += 1
      case .payload(let reference, let range):
        let payload = references[reference].payload
        return try payload.withUnsafeBytes { bytes in
          // `range` is in the slice's indices; `bytes` starts at the slice's start.
          let start = range.lowerBound - payload.startIndex
          buffers.append(UnsafeRawBufferPointer(rebasing: bytes[start..<start + range.count]))
          return try pin(plan, index + 1, frames, references, &buffers, body)
        }
      }
    }
    return try body(buffers)
  }
}
