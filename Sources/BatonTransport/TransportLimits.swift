/// Per-connection limits that are not announced in SETTINGS.
package struct TransportLimits: Sendable, Hashable {
  /// Bytes waiting to be written above which the connection stops reading from the peer until
  /// they drain (so a peer that sends requests but never reads responses can't grow memory).
  package var maxBufferedBytes: Int
  /// Bytes read per syscall.
  package var readChunk: Int
  /// PINGs the peer may send per second (with a burst of as many); one more ends the
  /// connection with GOAWAY(ENHANCE_YOUR_CALM, "too many pings"). 0 turns policing off.
  package var maxPingsPerSecond: Int

  package init(maxBufferedBytes: Int = 4 << 20, readChunk: Int = 256 << 10, maxPingsPerSecond: Int = 10) {
    self.maxBufferedBytes = maxBufferedBytes
    self.readChunk = readChunk
    self.maxPingsPerSecond = maxPingsPerSecond
  }
}
