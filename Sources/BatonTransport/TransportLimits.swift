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

  /// How long a peer may take to send its preface and SETTINGS. Default 10 s.
  package var handshakeTimeout: UInt64
  /// After this side decides to close: how long it waits for its last bytes to leave and for the
  /// peer's FIN before closing anyway. Default 2 s.
  package var linger: UInt64

  package init(
    maxBufferedBytes: Int = 4 << 20, readChunk: Int = 256 << 10, maxPingsPerSecond: Int = 10,
    handshakeTimeout: UInt64 = 10_000_000_000, linger: UInt64 = 2_000_000_000
  ) {
    self.maxBufferedBytes = maxBufferedBytes
    self.readChunk = readChunk
    self.maxPingsPerSecond = maxPingsPerSecond
    self.handshakeTimeout = handshakeTimeout
    self.linger = linger
  }
}
