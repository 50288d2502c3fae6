/// A reusable read buffer: the socket reads into its free tail, the decoder consumes from its head.
///
/// It grows only as far as one whole frame needs (the caller bounds that by MAX_FRAME_SIZE), and
/// moves unread bytes to the front only when the tail is too small, so a steady stream of small
/// frames never copies.
public struct InboundBuffer: Sendable {
  private var storage: [UInt8]
  private var readIndex = 0
  private var writeIndex = 0

  public init(capacity: Int = 64 * 1024) {
    storage = [UInt8](repeating: 0, count: max(capacity, 64))
  }

  public var readableCount: Int { writeIndex - readIndex }
  public var capacity: Int { storage.count }

  /// Makes room for at least `minimum` bytes, then lets `body` fill the tail and report how many it wrote.
  public mutating func write<E: Error>(
    minimumSpace minimum: Int, _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Int
  ) throws(E) -> Int {
    if readIndex == writeIndex {
      readIndex = 0
      writeIndex = 0
    }
    if storage.count - writeIndex < minimum {
      if readIndex > 0 {
        storage.withUnsafeMutableBytes { raw in
          let base = raw.baseAddress!  // non-empty storage always has a base address
          (base + 0).copyMemory(from: base + readIndex, byteCount: writeIndex - readIndex)
        }
        writeIndex -= readIndex
        readIndex = 0
      }
      if storage.count - writeIndex < minimum {
        var grown = storage.count
        while grown - writeIndex < minimum { grown *= 2 }
        storage.append(contentsOf: repeatElement(0, count: grown - storage.count))
      }
    }
    let start = writeIndex
    // The standard library's buffer accessors rethrow untyped, so the typed error travels in a Result.
    let outcome = storage.withUnsafeMutableBytes { raw in
      Result { () throws(E) in try body(UnsafeMutableRawBufferPointer(rebasing: raw[start...])) }
    }
    let written = try outcome.get()
    writeIndex += max(0, min(written, storage.count - start))
    return written
  }

  /// Appends raw bytes (what a read left over).
  public mutating func append(_ bytes: UnsafeRawBufferPointer) {
    _ = write(minimumSpace: bytes.count) { tail in
      tail.copyMemory(from: bytes)
      return bytes.count
    }
  }

  /// Appends bytes (for tests and for callers that already hold the bytes).
  public mutating func append(_ bytes: some Collection<UInt8>) {
    _ = write(minimumSpace: bytes.count) { tail in
      var index = 0
      for byte in bytes {
        tail[index] = byte
        index += 1
      }
      return index
    }
  }

  /// Lets `body` read the unread bytes and report how many it consumed.
  public mutating func read<R, E: Error>(
    _ body: (UnsafeRawBufferPointer) throws(E) -> (consumed: Int, result: R)
  ) throws(E) -> R {
    let (start, end) = (readIndex, writeIndex)
    let outcome = storage.withUnsafeBytes { raw in
      Result { () throws(E) in try body(UnsafeRawBufferPointer(rebasing: raw[start..<end])) }
    }
    let (consumed, result) = try outcome.get()
    readIndex += max(0, min(consumed, end - start))
    return result
  }

  /// Gives memory back after a burst: shrinks to `capacity` when nothing is buffered.
  public mutating func shrink(to capacity: Int) {
    let capacity = max(capacity, 64)
    guard readableCount == 0, storage.count > capacity else { return }
    storage = [UInt8](repeating: 0, count: capacity)
    readIndex = 0
    writeIndex = 0
  }
}
