/// Per-connection limits that are not announced in SETTINGS.
package struct TransportLimits: Sendable, Hashable {
  /// Bytes waiting to be written above which the connection stops reading from the peer until
  /// they drain (so a peer that sends requests but never reads responses can't grow memory).
  package var maxBufferedBytes: Int
  /// Bytes read per readiness event: one read, then the loop runs the handlers it woke and
  /// flushes their replies before it reads again. A small chunk keeps every stage of a busy
  /// stream working at once; a read of a whole window (the old 4 × 256 KiB) made each stage
  /// wait for the one before it (64 B stream: 1.7 → 2.2–2.6 M msgs/s, 4 KiB: 1.1 → 1.5 GB/s).
  package var readChunk: Int
  /// PINGs the peer may send per second (with a burst of as many); one more ends the
  /// connection with GOAWAY(ENHANCE_YOUR_CALM, "too many pings"). 0 turns policing off.
  package var maxPingsPerSecond: Int

  /// How long a peer may take to send its preface and SETTINGS. Default 10 s.
  package var handshakeTimeout: UInt64
  /// How long one frame may take to arrive once its first byte has: a peer dripping a large
  /// frame a byte at a time would otherwise hold the connection (and its buffer) for ever.
  /// Crossing it is a connection error ENHANCE_YOUR_CALM. Time spent not reading (this side
  /// paused reads for backpressure) does not count. Default 10 s.
  package var frameTimeout: UInt64
  /// After this side decides to close: how long it waits for its last bytes to leave and for the
  /// peer's FIN before closing anyway. Default 2 s.
  package var linger: UInt64
  /// How long a connection must make no flush before its write buffers give back what a burst
  /// left in them (see ``WriteBufferTrim``). Default 1 s.
  package var writeBufferTrimDelay: UInt64

  package init(
    maxBufferedBytes: Int = 4 << 20, readChunk: Int = 64 << 10, maxPingsPerSecond: Int = 10,
    handshakeTimeout: UInt64 = 10_000_000_000, frameTimeout: UInt64 = 10_000_000_000,
    linger: UInt64 = 2_000_000_000, writeBufferTrimDelay: UInt64 = 1_000_000_000
  ) {
    self.frameTimeout = frameTimeout
    self.writeBufferTrimDelay = writeBufferTrimDelay
    self.maxBufferedBytes = maxBufferedBytes
    self.readChunk = readChunk
    self.maxPingsPerSecond = maxPingsPerSecond
    self.handshakeTimeout = handshakeTimeout
    self.linger = linger
  }
}
