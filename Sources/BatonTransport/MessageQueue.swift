/// A FIFO of received messages for one stream. Its size is bounded by the stream's flow-control
/// window, because credit returns only as messages are taken out.
///
/// Small messages that queue up behind others are copied in back to back (`packed`) and become
/// arrays of their own only as the reader takes them. So the array is allocated on the reader's
/// thread, where the reader also frees it once done: the connection's loop and the reader no
/// longer pass every message's memory between them, which cost both sides in the allocator.
package struct MessageQueue: Sendable {
  /// The only message, while there is just one: a unary call's request or reply then never
  /// allocates the array below. Non-nil only while `items` holds nothing.
  private var single: [UInt8]?
  private var items: [Item] = []
  private var head = 0
  /// The bytes of the `.packed` items, in order, from `packedHead` on.
  private var packed: [UInt8] = []
  private var packedHead = 0
  /// The bytes of the messages still queued: the credit they will give back when taken.
  package private(set) var byteCount = 0
  /// For a batch a reader took: bytes the connection still counts as lent (not yet credited).
  private var lentBytes = 0
  /// Bytes of the batch consumed since the last credit.
  private var consumedBytes = 0

  private enum Item {
    /// A message as an array; taken ones leave nil behind, so that clearing releases nothing.
    case message([UInt8]?)
    /// A message of this many bytes in `packed`.
    case packed(Int)
  }

  /// Messages smaller than this are packed once others are queued; a larger one costs more to
  /// copy twice than to allocate where it arrives.
  static let largestPacked = 1_024
  /// What `packed`, and separately `items`, may keep once read empty (the queue and the reader's
  /// batch trade places, so a busy stream reuses two of each); more is given back, so that a
  /// stream that once took a burst does not hold its memory while it lives.
  static let keptPackedCapacity = 64 << 10
  private static let keptItemCapacity = keptPackedCapacity / MemoryLayout<Item>.stride
  private static let initialPackedCapacity = 4 << 10

  package init() {}

  package var isEmpty: Bool { single == nil && head == items.count }
  /// Messages queued.
  package var count: Int { single != nil ? 1 : items.count - head }

  /// For tests: the packed buffer's capacity, kept for reuse or given back.
  var packedCapacity: Int { packed.capacity }
  /// For tests: the bytes of memory the queue holds for its items and packed bytes.
  var capacityBytes: Int { packed.capacity + items.capacity * MemoryLayout<Item>.stride }

  /// Consuming: the connection hands over the bytes it decoded, with no retain and release.
  package mutating func append(_ message: consuming [UInt8]) {
    byteCount += message.count
    if head == items.count {
      guard let first = single.take() else {
        single = message
        return
      }
      items.append(.message(first))
    }
    items.append(.message(message))
  }

  /// Copies in a message that the connection decoded in place: packed when it is small and others
  /// are queued (or this queue has already packed), else as an array of its own.
  mutating func append(copying message: UnsafeRawBufferPointer) {
    guard message.count < Self.largestPacked, !isEmpty || packed.capacity > 0 else {
      return append(Array(message))
    }
    if head == items.count, let first = single.take() { items.append(.message(first)) }
    if packed.capacity == 0 { packed.reserveCapacity(Self.initialPackedCapacity) }
    packed.append(contentsOf: message)
    items.append(.packed(message.count))
    byteCount += message.count
  }

  package mutating func popFirst() -> [UInt8]? {
    // Kept optional throughout: unwrapping into a local costs a retain and release per message.
    var message = single.take()
    if message == nil {
      guard head < items.count else { return nil }
      var item = Item.packed(0)
      swap(&item, &items[head])
      head += 1
      switch consume item {
      case .message(let array):
        message = array
      case .packed(let count):
        let start = packedHead
        message = packed.withUnsafeBytes { Array(UnsafeRawBufferPointer(rebasing: $0[start..<start + count])) }
        packedHead += count
      }
      if head == items.count {
        items.removeAll(keepingCapacity: items.capacity <= Self.keptItemCapacity)
        head = 0
        packed.removeAll(keepingCapacity: packed.capacity <= Self.keptPackedCapacity)
        packedHead = 0
      }
    }
    let count = message?.count ?? 0
    byteCount -= count
    if lentBytes > 0 { consumedBytes += count }
    return message
  }

  /// The next message of a reader's batch. Once the reader has consumed half of what is still
  /// lent (see ``owesCredit``), `giveBack` gets those bytes to credit to the sender, so that it
  /// keeps a window open while a large batch is read.
  package mutating func popFirst(crediting giveBack: (Int) -> Void) -> [UInt8]? {
    guard let message = popFirst() else { return nil }
    if owesCredit { giveBack(takeOwedCredit()) }
    return message
  }

  /// Removes everything, returning the byte count so that its credit can be given back.
  mutating func removeAll() -> Int {
    let bytes = byteCount
    single = nil
    items.removeAll()
    head = 0
    packed.removeAll()
    packedHead = 0
    byteCount = 0
    lentBytes = 0
    consumedBytes = 0
    return bytes
  }

  /// Marks this queue as a batch whose messages' credit (`bytes`) the connection has not yet
  /// returned.
  mutating func lend(_ bytes: Int) {
    lentBytes = bytes
    consumedBytes = 0
  }

  /// True once the reader has consumed half of what is still lent: time to give that back, so
  /// that the sender keeps a window open while a large batch is read.
  var owesCredit: Bool { consumedBytes > 0 && consumedBytes * 2 >= lentBytes }

  /// The consumed bytes to credit now (see ``owesCredit``).
  mutating func takeOwedCredit() -> Int {
    let bytes = consumedBytes
    lentBytes -= bytes
    consumedBytes = 0
    return bytes
  }
}
