/// A hash table from stream id to `Value`: what a connection looks up for every frame it reads
/// and every message it sends.
///
/// Why not `Dictionary`: hashing a `UInt32` with SipHash cost more than the rest of the table
/// work combined (about a tenth of a 64-byte echo's CPU, measured with perf). Stream ids are
/// small, distinct and mostly consecutive, so a multiplicative hash spreads them perfectly;
/// the per-process random seed keeps a peer from choosing ids that all land in one bucket
/// (and the number of live streams, bounded by MAX_CONCURRENT_STREAMS, bounds any probe).
///
/// Open addressing with linear probing and backward-shift deletion: no tombstones, so a
/// long-lived connection's lookups never slow down. The load factor stays at or below 3/4.
///
/// Ids are stream ids (31 bits on the wire); `UInt32.max` is never present and cannot be stored.
public struct StreamTable<Value> {
  /// Each id is kept plus one, so that 0 can mark an empty bucket.
  @usableFromInline var keys: [UInt32]
  @usableFromInline var values: [Value?]
  @usableFromInline var shift: UInt32
  @usableFromInline let seed = streamTableSeed
  @usableFromInline var storedCount = 0
  /// How many ids the table holds.
  @inlinable public var count: Int { storedCount }

  @usableFromInline static var minimumBuckets: Int { 8 }

  /// An empty table allocates nothing until its first insertion: an idle connection holds
  /// several of them.
  @inlinable
  public init() {
    keys = []
    values = []
    shift = 32
  }

  @inlinable
  public var isEmpty: Bool { count == 0 }

  /// Every id in the table, in no particular order.
  @inlinable
  public var keysArray: [UInt32] {
    var result: [UInt32] = []
    result.reserveCapacity(count)
    for key in keys where key != 0 { result.append(key &- 1) }
    return result
  }

  @inlinable
  public subscript(id: UInt32) -> Value? {
    get {
      let (bucket, found) = find(id)
      return found ? values[bucket] : nil
    }
    _modify {
      // The value is moved out while the caller changes it, so that a buffer inside it stays
      // uniquely referenced (no copy-on-write), and written back (or removed) afterwards.
      let (bucket, found) = find(id)
      var value: Value? = found ? values[bucket].take() : nil
      defer { store(id, value, bucket: bucket, found: found) }
      yield &value
    }
  }

  /// Changes the value of `id` in place and returns what `body` returns; nil if `id` is absent.
  @inlinable @inline(__always)
  public mutating func update<Result>(_ id: UInt32, _ body: (inout Value) -> Result) -> Result? {
    let (bucket, found) = find(id)
    guard found, var value = values[bucket].take() else { return nil }
    defer { values[bucket] = value }
    return body(&value)
  }

  /// What `body` reads from the value of `id`, borrowed in place rather than copied out: for a
  /// class, this saves a retain and release per lookup. Nil if `id` is absent.
  @inlinable @inline(__always)
  public func withValue<Result>(_ id: UInt32, _ body: (borrowing Value) -> Result) -> Result? {
    let (bucket, found) = find(id)
    guard found else { return nil }
    return values.withUnsafeBufferPointer { buffer in
      switch buffer[bucket] {
      case .some(let value): body(value)
      case .none: nil
      }
    }
  }

  @inlinable @discardableResult
  public mutating func removeValue(forKey id: UInt32) -> Value? {
    let (bucket, found) = find(id)
    guard found else { return nil }
    let value = values[bucket].take()
    removeBucket(bucket)
    return value
  }

  /// Empties the table and gives its memory back.
  @inlinable
  public mutating func removeAll() {
    self = StreamTable()
  }

  // MARK: - Buckets

  @inlinable
  var mask: Int { keys.count &- 1 }

  @inlinable @inline(__always)
  func home(_ key: UInt32) -> Int {
    Int(truncatingIfNeeded: ((key ^ seed) &* 0x9E37_79B1) >> shift)
  }

  /// The bucket holding `id`, or the empty bucket where it would go.
  @inlinable @inline(__always)
  func find(_ id: UInt32) -> (bucket: Int, found: Bool) {
    guard !keys.isEmpty, id != .max else { return (0, false) }
    let stored = id &+ 1
    var bucket = home(stored)
    while true {
      let key = keys[bucket]
      if key == stored { return (bucket, true) }
      if key == 0 { return (bucket, false) }
      bucket = (bucket &+ 1) & mask
    }
  }

  @inlinable
  mutating func store(_ id: UInt32, _ value: Value?, bucket: Int, found: Bool) {
    switch (found, value) {
    case (true, let value?):
      values[bucket] = value
    case (true, nil):
      removeBucket(bucket)
    case (false, let value?):
      precondition(id != .max, "StreamTable cannot hold the id UInt32.max")
      insert(id &+ 1, value, bucket: bucket)
    case (false, nil):
      break
    }
  }

  @inlinable
  mutating func insert(_ key: UInt32, _ value: Value, bucket: Int) {
    if keys.isEmpty || (count + 1) * 4 > keys.count * 3 {
      grow()
      let (bucket, _) = find(key &- 1)
      keys[bucket] = key
      values[bucket] = value
    } else {
      keys[bucket] = key
      values[bucket] = value
    }
    storedCount += 1
  }

  @inlinable
  mutating func grow() {
    let oldKeys = keys
    var oldValues = values
    let buckets = max(Self.minimumBuckets, keys.count * 2)
    keys = Array(repeating: 0, count: buckets)
    values = Array(repeating: nil, count: buckets)
    shift = 32 - UInt32(buckets.trailingZeroBitCount)
    for index in oldKeys.indices where oldKeys[index] != 0 {
      let (bucket, _) = find(oldKeys[index] &- 1)
      keys[bucket] = oldKeys[index]
      values[bucket] = oldValues[index].take()
    }
  }

  /// Empties a bucket and moves later members of its probe run back, so that every key stays
  /// reachable from its home bucket without tombstones.
  @inlinable
  mutating func removeBucket(_ bucket: Int) {
    var hole = bucket
    var next = bucket
    while true {
      next = (next &+ 1) & mask
      let key = keys[next]
      if key == 0 { break }
      // Move `key` into the hole unless its home lies cyclically after the hole.
      if (next &- home(key)) & mask >= (next &- hole) & mask {
        keys[hole] = key
        values[hole] = values[next].take()
        hole = next
      }
    }
    keys[hole] = 0
    values[hole] = nil
    storedCount -= 1
  }
}

extension StreamTable: Sendable where Value: Sendable {}

/// Chosen once per process, like `Hasher`'s seed.
@usableFromInline let streamTableSeed = UInt32.random(in: 0...UInt32.max)
