/// Ordered name/value pairs sent with a call (OPEN), its response (HEADERS) and its end (TRAILERS).
///
/// Names are lower-case `[a-z0-9-_.]`; a name may repeat. Names starting with `baton-` are reserved.
public struct Metadata: Hashable, Sendable, Sequence, ExpressibleByDictionaryLiteral,
  CustomStringConvertible
{
  /// One name/value pair.
  public struct Entry: Hashable, Sendable {
    /// Lower-case `[a-z0-9-_.]`.
    public var name: String
    /// Any UTF-8 text up to 65,535 bytes.
    public var value: String
    /// A pair as given (``Metadata`` folds the name to lower case).
    public init(name: String, value: String) {
      self.name = name
      self.value = value
    }
  }

  /// The pairs in wire order.
  public private(set) var entries: [Entry]

  /// No pairs.
  public init() { entries = [] }
  /// Names are folded to lower case, as on the wire.
  public init(_ entries: [Entry]) {
    self.entries = entries.map { Entry(name: $0.name.lowercased(), value: $0.value) }
  }
  /// `["trace-id": "abc"]`; names are folded to lower case.
  public init(dictionaryLiteral elements: (String, String)...) {
    entries = elements.map { Entry(name: $0.0.lowercased(), value: $0.1) }
  }

  /// Whether there are no pairs.
  public var isEmpty: Bool { entries.isEmpty }
  /// How many pairs, repeats included.
  public var count: Int { entries.count }

  /// Appends a pair. Names are folded to lower case so that callers can't make an invalid block.
  public mutating func add(_ name: String, _ value: String) {
    entries.append(Entry(name: name.lowercased(), value: value))
  }

  /// The first value for `name`, if any.
  public subscript(name: String) -> String? {
    let lowered = name.lowercased()
    return entries.first { $0.name == lowered }?.value
  }

  /// Every value for `name`, in order.
  public func values(for name: String) -> [String] {
    let lowered = name.lowercased()
    return entries.filter { $0.name == lowered }.map(\.value)
  }

  /// The pairs in wire order.
  public func makeIterator() -> IndexingIterator<[Entry]> { entries.makeIterator() }

  /// `[name: value, ...]`, for logs.
  public var description: String {
    "[" + entries.map { "\($0.name): \($0.value)" }.joined(separator: ", ") + "]"
  }

  /// Whether `name` is a valid wire name (PROTOCOL.md, "Metadata block").
  public static func isValidName<C: Collection<UInt8>>(_ name: C) -> Bool {
    guard !name.isEmpty else { return false }
    for byte in name {
      switch byte {
      case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
        UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
        continue
      default:
        return false
      }
    }
    return true
  }
}
