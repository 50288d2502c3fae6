/// What one nonblocking read produced.
package enum ReadResult: Sendable, Equatable {
  /// This many bytes (at least 1) were read into the buffer.
  case bytes(Int)
  /// The peer closed its side: no more bytes will come.
  case eof
  /// Nothing to read now; wait for the fd to become readable.
  case wouldBlock
}
