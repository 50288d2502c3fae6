package import CBatonShims

/// One buffer of a gathered write (`struct iovec`), as ``Socket/writev(_:_:)`` takes them.
///
/// Named here so that callers need not import the C shim module to build one.
package typealias IOVector = iovec

extension IOVector {
  /// A vector over `buffer`'s bytes. `buffer` must stay valid until the write returns.
  @inline(__always)
  package init(_ buffer: UnsafeRawBufferPointer) {
    self.init(iov_base: UnsafeMutableRawPointer(mutating: buffer.baseAddress), iov_len: buffer.count)
  }
}
