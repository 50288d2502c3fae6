/// What an interceptor does to one message (``ServerCall`` and ``ClientCall`` alike): throwing
/// fails the call with that error.
@usableFromInline package typealias MessageTransform = @Sendable ([UInt8]) async throws -> [UInt8]

/// `transforms` applied in order, as one; nil if there are none. Any collection, so that a
/// reversed list (the response side's order) is read in place: one or no transform, the usual
/// case, costs no copy.
@inlinable
package func composed(_ transforms: some Collection<MessageTransform>) -> MessageTransform? {
  switch transforms.count {
  case 0: return nil
  case 1: return transforms.first
  default:
    let all = Array(transforms)
    return { message in
      var message = message
      for transform in all { message = try await transform(message) }
      return message
    }
  }
}
