import Glibc

// The single place where `errno` is read after a call. Every wrapper in this module goes
// through one of these, so EINTR handling and error mapping are decided once.

/// Runs `body` until it stops failing with EINTR; any other `-1` throws ``IOError``.
@inline(__always)
func retryingInterrupts<Result: FixedWidthInteger>(
  _ call: String,
  _ body: () -> Result
) throws(IOError) -> Result {
  while true {
    let result = body()
    if result != -1 {
      return result
    }
    let code = errno
    if code == EINTR {
      continue
    }
    throw IOError(errno: code, call: call)
  }
}

/// Like ``retryingInterrupts(_:_:)`` but EAGAIN/EWOULDBLOCK give `nil`.
@inline(__always)
func nonBlocking<Result: FixedWidthInteger>(
  _ call: String,
  _ body: () -> Result
) throws(IOError) -> Result? {
  while true {
    let result = body()
    if result != -1 {
      return result
    }
    let code = errno
    if code == EINTR {
      continue
    }
    if code == EAGAIN || code == EWOULDBLOCK {
      return nil
    }
    throw IOError(errno: code, call: call)
  }
}
