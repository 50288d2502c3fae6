import BatonCore

/// The sender's side of the metadata rules (PROTOCOL.md 5): what an application may put in a
/// call's metadata. Checked once per call, before any attempt, so that a refused call sends
/// nothing on the wire.
enum MetadataRules {
  /// Throws `invalidArgument` for a name that is empty, longer than 65,535 bytes, has a byte
  /// outside `a-z 0-9 - _ .`, or starts with the reserved `baton-`; or a value longer than
  /// 65,535 bytes. (``Metadata`` already folds names to lower case.)
  static func check(_ metadata: Metadata) throws {
    for entry in metadata {
      let name = entry.name.utf8
      guard name.count <= Int(UInt16.max), Metadata.isValidName(name) else {
        throw RPCError(
          code: .invalidArgument,
          message: "metadata name '\(entry.name)' is invalid: 1 to 65,535 bytes of a-z, 0-9, '-', '_' and '.'")
      }
      guard !name.starts(with: "baton-".utf8) else {
        throw RPCError(
          code: .invalidArgument,
          message: "metadata name '\(entry.name)' is reserved: names starting with 'baton-' belong to the protocol")
      }
      guard entry.value.utf8.count <= Int(UInt16.max) else {
        throw RPCError(
          code: .invalidArgument, message: "the value of metadata '\(entry.name)' is longer than 65,535 bytes")
      }
    }
  }
}
