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
public struct StreamTable<Value> {
  /// 0 marks an empty bucket; the id 0 (the connection itself) lives in `zero` instead.
  @usableFromInline var keys: [UInt32]
  @usableFromInline var values: [Value?]
  @usableFromInline var zero: Value?
  @usableFromInline var shift: UInt32
  @usableFromInline let seed = streamTableSeed
  @usableFromInline var storedCount = 0
  /// How many ids the table holds.
  @inlinable public var count: Int { storedCount }

  @usableFromInline static var minimumBuckets: Int { 8 }

  @inlinable
  public init() {
    keys = Array(repeating: 0, count: Self.minimumBuckets)
    values = Array(repeating: nil, count: Self.minimumBuckets)
    shift = 32 - UInt32(Self.minimumBuckets.trailingZeroBitCount)
  }

  @inlinable
  public var isEmpty: Bool { count == 0 }

  /// Every id in the table, in no particular order.
  @inlinable
  public var keysArray: [UInt32] {
    var result: [UInt32] = []
    result.reserveCapacity(count)
    if zero != nil { result.append(0) }
    for key in keys where key != 0 { result.append(key) }
    return result
  }

  @inlinable
  public subscript(id: UInt32) -> Value? {
    get {
      if id == 0 { return zero }
      let (bucket, found) = find(id)
      return found ? values[bucket] : nil
    }
    _modify {
      // The value is moved out while the caller changes it, so that a buffer inside it stays
      // uniquely referenced (no copy-on-write), and written back (or removed) afterwards.
      if id == 0 {
        let had = zero != nil
        defer { storedCount += (zero != nil ? 1 : 0) - (had ? 1 : 0) }
        yield &zero
      } else {
        let (bucket, found) = find(id)
        var value: Value? = found ? values[bucket].take() : nil
        defer { store(id, value, bucket: bucket, found: found) }
        yield &value
      }
    }
  }

  /// Changes the value of `id` in place and returns what `body` returns; nil if `id` is absent.
  @inlinable @inline(__always)
  public mutating func update<Result>(_ id: UInt32, _ body: (inout Value) -> Result) -> Result? {
    if id == 0 {
      guard var value = zero.take() else { return nil }
      defer { zero = value }
      return body(&value)
    }
    let (bucket, found) = find(id)
    guard found, var value = values[bucket].take() else { return nil }
    defer { values[bucket] = value }
    return body(&value)
  }

  @inlinable @discardableResult
  public mutating func removeValue(forKey id: UInt32) -> Value? {
    if id == 0 {
      defer { if zero != nil { zero = nil; storedCount -= 1 } }
      return zero
    }
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
  func home(_ id: UInt32) -> Int {
    Int(truncatingIfNeeded: ((id ^ seed) &* 0x9E37_79B1) >> shift)
  }

  /// The bucket holding `id`, or the empty bucket where it would go.
  @inlinable @inline(__always)
  func find(_ id: UInt32) -> (bucket: Int, found: Bool) {
    var bucket = home(id)
    while true {
      let key = keys[bucket]
      if key == id { return (bucket, true) }
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
      insert(id, value, bucket: bucket)
    case (false, nil):
      break
    }
  }

  @inlinable
  mutating func insert(_ id: UInt32, _ value: Value, bucket: Int) {
    if (count + 1) * 4 > keys.count * 3 {
      grow()
      let (bucket, _) = find(id)
      keys[bucket] = id
      values[bucket] = value
    } else {
      keys[bucket] = id
      values[bucket] = value
    }
    storedCount += 1
  }

  @inlinable
  mutating func grow() {
    let oldKeys = keys
    var oldValues = values
    let buckets = keys.count * 2
    keys = Array(repeating: 0, count: buckets)
    values = Array(repeating: nil, count: buckets)
    shift = 32 - UInt32(buckets.trailingZeroBitCount)
    for index in oldKeys.indices where oldKeys[index] != 0 {
      let (bucket, _) = find(oldKeys[index])
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
