/// When a connection's write buffers give back the capacity a burst left in them.
///
/// Why keep it at all: a busy stream fills a little more than 64 KiB per loop turn (one read's
/// worth of echoes), and dropping that buffer after every flush made the next turn regrow it,
/// with a large allocation that also consolidated the allocator's free lists (6 % of the
/// server's CPU on a 64 B stream). So up to ``busyCapacity`` is kept while flushes continue,
/// and once a connection has made no flush for a whole trim delay the buffers shrink back to
/// nothing: an idle connection holds no burst's memory.
struct WriteBufferTrim {
  /// Capacity any connection may keep for good.
  static let idleCapacity = 64 << 10
  /// Capacity kept through a burst; a larger buffer is dropped at once.
  static let busyCapacity = 1 << 20

  /// What to do with the emptied write buffer after a flush.
  enum AfterFlush: Equatable {
    /// Small: keep its capacity.
    case keep
    /// Kept through the burst; start the trim timer (it is not running).
    case keepAndStartTimer
    /// Kept through the burst; the trim timer already runs.
    case keepWhileTimerRuns
    /// Too large to keep.
    case drop
  }

  private var flushedSinceTimer = false

  /// Notes a flush that emptied the buffer, which has `capacity` bytes of room; `timerRunning`
  /// says whether the connection's trim timer is set.
  mutating func afterFlush(capacity: Int, timerRunning: Bool) -> AfterFlush {
    flushedSinceTimer = true
    if capacity > Self.busyCapacity { return .drop }
    if capacity <= Self.idleCapacity { return .keep }
    if timerRunning { return .keepWhileTimerRuns }
    flushedSinceTimer = false
    return .keepAndStartTimer
  }

  /// Notes a flush that left bytes to write: the connection is still busy.
  mutating func flushedPartly() {
    flushedSinceTimer = true
  }

  /// The trim timer fired. True: the connection was quiet for the whole delay, trim now.
  /// False: it flushed meanwhile, set the timer again.
  mutating func timerFired() -> Bool {
    defer { flushedSinceTimer = false }
    return !flushedSinceTimer
  }
}
