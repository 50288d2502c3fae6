import BatonCore
import Testing

@Suite("Metadata")
struct MetadataTests {
  @Test("a dictionary literal keeps pairs in the order written, repeats included")
  func literalOrder() {
    let metadata: Metadata = ["b": "1", "a": "2", "b": "3"]
    #expect(metadata.entries.map(\.name) == ["b", "a", "b"])
    #expect(metadata.entries.map(\.value) == ["1", "2", "3"])
    #expect(metadata.count == 3)
    #expect(!metadata.isEmpty)
    #expect(Array(metadata).map(\.value) == ["1", "2", "3"], "iteration is wire order")
    #expect(Metadata().isEmpty)
    #expect(Metadata().count == 0)
  }

  @Test("add appends in order and folds the name to lower case")
  func addFolds() {
    var metadata = Metadata()
    metadata.add("Trace-ID", "abc")
    metadata.add("x", "1")
    metadata.add("trace-id", "def")
    #expect(
      metadata.entries == [
        Metadata.Entry(name: "trace-id", value: "abc"), Metadata.Entry(name: "x", value: "1"),
        Metadata.Entry(name: "trace-id", value: "def"),
      ])
    #expect(Metadata.isValidName(Array(metadata.entries[0].name.utf8)))
  }

  @Test(
    "subscript returns the first value for a name, whatever case the caller uses; values(for:) returns all in order")
  func lookup() {
    var metadata = Metadata()
    metadata.add("trace-id", "abc")
    metadata.add("other", "x")
    metadata.add("trace-id", "def")
    #expect(metadata["trace-id"] == "abc")
    #expect(metadata["TRACE-ID"] == "abc")
    #expect(metadata["missing"] == nil)
    #expect(metadata.values(for: "Trace-Id") == ["abc", "def"])
    #expect(metadata.values(for: "missing") == [])
  }

  @Test("names from a dictionary literal are folded like add(_:_:), so lookups find them and the block stays valid")
  func literalNamesFold() {
    let metadata: Metadata = ["Trace-ID": "abc"]
    #expect(metadata["trace-id"] == "abc")
    #expect(metadata.entries.allSatisfy { Metadata.isValidName(Array($0.name.utf8)) })
  }

  @Test("equal metadata means the same pairs in the same order")
  func equality() {
    let ab: Metadata = ["a": "1", "b": "2"]
    let ba: Metadata = ["b": "2", "a": "1"]
    #expect(ab == ["a": "1", "b": "2"])
    #expect(ab != ba)
    #expect(ab.description == "[a: 1, b: 2]")
  }

  @Test(
    "valid wire names are 1+ bytes of a-z 0-9 - _ .",
    arguments: ["a", "trace-id", "x.cache_state", "0", "a-b_c.d9", String(repeating: "z", count: 300)])
  func validNames(_ name: String) {
    #expect(Metadata.isValidName(Array(name.utf8)))
  }

  @Test(
    "invalid wire names: empty, upper case, space, colon, slash, non-ASCII",
    arguments: ["", "A", "Trace", "a b", "a:b", "a/b", "grüße", "\u{0}"])
  func invalidNames(_ name: String) {
    #expect(!Metadata.isValidName(Array(name.utf8)))
  }

  @Test("the encoded block size is 2 + per pair (2 + name + 2 + value) in UTF-8 bytes")
  func encodedLength() {
    #expect(FrameEncoder.metadataLength([:]) == 2)
    #expect(FrameEncoder.metadataLength(["a": ""]) == 2 + 2 + 1 + 2)
    #expect(FrameEncoder.metadataLength(["greeting": "grüße"]) == 2 + 2 + 8 + 2 + 7)
    // HEADERS carries exactly the block: the frame length must agree.
    let metadata: Metadata = ["x": "ü", "y": "abc"]
    let bytes = encode(.headers(streamID: 1, metadata))
    #expect(bytes.count == FrameEncoder.headerLength + FrameEncoder.metadataLength(metadata))
  }

  @Test("metadata with repeated names and UTF-8 values survives an encode/decode round trip")
  func roundTrip() {
    var metadata = Metadata()
    metadata.add("a", "1")
    metadata.add("a", "")
    metadata.add("emoji", "⚠️ ok")
    let frame = Frame.trailers(streamID: 9, Trailers(status: 0, metadata: metadata))
    let bytes = encode(frame)
    #expect(permissiveDecoder.decodeResult(bytes) == .success(.frame(frame, consumed: bytes.count)))
  }
}
