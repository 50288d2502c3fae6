import BatonCore
import Foundation
import Testing

// MARK: - Hex

extension Array where Element == UInt8 {
  /// Bytes from lowercase or uppercase hex; traps on odd length or a non-hex digit (test input only).
  init(hex: String) {
    let digits = Array(hex.utf8)
    precondition(digits.count % 2 == 0, "odd-length hex: \(hex)")
    func nibble(_ digit: UInt8) -> UInt8 {
      switch digit {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
      default: preconditionFailure("not a hex digit in \(hex)")
      }
    }
    self = stride(from: 0, to: digits.count, by: 2).map { nibble(digits[$0]) << 4 | nibble(digits[$0 + 1]) }
  }

  var hex: String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(count * 2)
    for byte in self {
      out.append(digits[Int(byte >> 4)])
      out.append(digits[Int(byte & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
  }
}

// MARK: - Randomness

/// A small deterministic generator, so that a failure can be replayed.
struct SplitMix: RandomNumberGenerator {
  var state: UInt64
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

// MARK: - Decoding helpers

/// A decoder that accepts anything a well-behaved encoder may write, for reading back `outbound`.
let permissiveDecoder = FrameDecoder(maxFrameSize: 16_777_215, maxMetadataSize: .max)

extension FrameDecoder {
  /// `decode` over an array, with the typed error carried out as a `Result`.
  func decodeResult(_ bytes: [UInt8]) -> Swift.Result<FrameDecoder.Outcome, WireError> {
    bytes.withUnsafeBytes { raw in
      Result { () throws(WireError) in try decode(raw) }
    }
  }

  /// Decodes every frame of `bytes`, which must hold whole, well-formed frames only.
  func decodeAll(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> [Frame] {
    var frames: [Frame] = []
    var rest = bytes[...]
    while !rest.isEmpty {
      switch decodeResult(Array(rest)) {
      case .success(.frame(let frame, let consumed)):
        frames.append(frame)
        rest = rest.dropFirst(consumed)
      case let other:
        Issue.record("undecodable bytes \(Array(rest).hex): \(other)", sourceLocation: sourceLocation)
        return frames
      }
    }
    return frames
  }
}

func encode(_ frames: Frame...) -> [UInt8] { encode(frames) }

func encode(_ frames: [Frame]) -> [UInt8] {
  var bytes: [UInt8] = []
  for frame in frames { FrameEncoder.encode(frame, into: &bytes) }
  return bytes
}

// MARK: - Vector files

/// The shared conformance vectors in `Protocol/vectors/`, found by walking up from this file.
enum Vectors {
  static let directory: URL = {
    var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    while url.path != "/" {
      let candidate = url.appendingPathComponent("Protocol/vectors/frames.json")
      if FileManager.default.fileExists(atPath: candidate.path) {
        return url.appendingPathComponent("Protocol/vectors")
      }
      url.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: "/nonexistent/Protocol/vectors")
  }()

  static func load<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
    let data = try Data(contentsOf: directory.appendingPathComponent(name))
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    return try decoder.decode(T.self, from: data)
  }

  static func frames() throws -> FramesFile { try load("frames.json", as: FramesFile.self) }
  static func preface() throws -> PrefaceFile { try load("preface.json", as: PrefaceFile.self) }
}

struct FramesFile: Decodable, Sendable {
  struct Limits: Decodable, Sendable {
    var maxFrameSize: UInt32
    var maxMetadataSize: UInt32
  }
  var version: Int
  var defaults: Limits
  var valid: [ValidVector]
  var sequences: [SequenceVector]
  var invalid: [InvalidVector]
}

struct ValidVector: Decodable, Sendable, CustomTestStringConvertible {
  var name: String
  var hex: String
  var frame: JSONFrame
  var decodeOnly: Bool
  var testDescription: String { name }
}

struct SequenceVector: Decodable, Sendable, CustomTestStringConvertible {
  var name: String
  var hex: String
  var frames: [JSONFrame]
  var testDescription: String { name }
}

struct ExpectedError: Decodable, Sendable {
  var scope: String
  var code: String
  var streamId: UInt32?
}

struct InvalidVector: Decodable, Sendable, CustomTestStringConvertible {
  var name: String
  var hex: String
  var maxFrameSize: UInt32?
  var maxMetadataSize: UInt32?
  var error: ExpectedError
  var testDescription: String { name }
}

struct PrefaceFile: Decodable, Sendable {
  struct Valid: Decodable, Sendable, CustomTestStringConvertible {
    var name: String
    var hex: String
    var testDescription: String { name }
  }
  struct Invalid: Decodable, Sendable, CustomTestStringConvertible {
    var name: String
    var hex: String
    var error: ExpectedError
    var testDescription: String { name }
  }
  var version: Int
  var valid: [Valid]
  var invalid: [Invalid]
}

/// A frame as the vectors write it (PROTOCOL.md section 17, "Frame objects").
struct JSONFrame: Decodable, Sendable {
  var type: String
  var streamId: UInt32?
  var endStream: Bool?
  var endMessage: Bool?
  var data: String?
  var method: String?
  var timeoutUs: UInt64?
  var metadata: [[String]]?
  var status: UInt8?
  var message: String?
  var errorCode: UInt32?
  var settings: [[UInt32]]?
  var ack: Bool?
  var lastStreamId: UInt32?
  var debug: String?
  var increment: UInt32?
  var consumed: UInt64?
  var token: String?

  struct Malformed: Error, CustomStringConvertible {
    var description: String
  }

  /// The ``Frame`` this JSON object describes.
  func frame() throws -> Frame {
    func need<T>(_ value: T?, _ field: String) throws -> T {
      guard let value else { throw Malformed(description: "\(type) vector lacks \(field)") }
      return value
    }
    func metadataBlock() throws -> Metadata {
      Metadata(
        try need(metadata, "metadata").map { pair in
          guard pair.count == 2 else { throw Malformed(description: "metadata pair \(pair)") }
          return Metadata.Entry(name: pair[0], value: pair[1])
        })
    }
    switch type {
    case "DATA":
      return .data(
        streamID: try need(streamId, "stream_id"), payload: [UInt8](hex: try need(data, "data")),
        endMessage: try need(endMessage, "end_message"), endStream: try need(endStream, "end_stream"))
    case "OPEN":
      let head = RequestHead(
        method: try need(method, "method"), timeoutMicroseconds: try need(timeoutUs, "timeout_us"),
        metadata: try metadataBlock())
      return .open(streamID: try need(streamId, "stream_id"), head, endStream: try need(endStream, "end_stream"))
    case "HEADERS":
      return .headers(streamID: try need(streamId, "stream_id"), try metadataBlock())
    case "TRAILERS":
      return .trailers(
        streamID: try need(streamId, "stream_id"),
        Trailers(
          status: try need(status, "status"), message: try need(message, "message"), metadata: try metadataBlock()))
    case "RESET":
      return .reset(streamID: try need(streamId, "stream_id"), ErrorCode(rawValue: try need(errorCode, "error_code")))
    case "SETTINGS":
      return .settings(
        try need(settings, "settings").map { pair in
          guard pair.count == 2, let id = UInt16(exactly: pair[0]) else {
            throw Malformed(description: "setting \(pair)")
          }
          return Frame.Setting(id: id, value: pair[1])
        })
    case "PING":
      let bytes = [UInt8](hex: try need(data, "data"))
      guard bytes.count == 8 else { throw Malformed(description: "PING data of \(bytes.count) bytes") }
      return .ping(ack: try need(ack, "ack"), payload: bytes.reduce(0) { $0 << 8 | UInt64($1) })
    case "GOAWAY":
      return .goAway(
        lastStreamID: try need(lastStreamId, "last_stream_id"), ErrorCode(rawValue: try need(errorCode, "error_code")),
        debug: try need(debug, "debug"))
    case "WINDOW_UPDATE":
      return .windowUpdate(streamID: try need(streamId, "stream_id"), increment: try need(increment, "increment"))
    case "CHECKPOINT":
      return .checkpoint(
        streamID: try need(streamId, "stream_id"), consumed: try need(consumed, "consumed"),
        token: [UInt8](hex: try need(token, "token")))
    default:
      throw Malformed(description: "unknown frame type \(type)")
    }
  }
}

// MARK: - Frame queries

extension Frame {
  var streamID: UInt32 {
    switch self {
    case .data(let id, _, _, _), .open(let id, _, _), .headers(let id, _), .trailers(let id, _),
      .reset(let id, _), .windowUpdate(let id, _), .checkpoint(let id, _, _):
      id
    case .settings, .ping, .goAway:
      0
    }
  }

  /// (stream, code) of a RESET.
  var reset: StreamCode? {
    if case .reset(let id, let code) = self { return StreamCode(id, code) }
    return nil
  }

  /// (last id, code) of a GOAWAY.
  var goAway: StreamCode? {
    if case .goAway(let last, let code, _) = self { return StreamCode(last, code) }
    return nil
  }

  /// (stream, increment) of a WINDOW_UPDATE.
  var windowUpdate: (streamID: UInt32, increment: UInt32)? {
    if case .windowUpdate(let id, let increment) = self { return (id, increment) }
    return nil
  }

  /// (stream, payload, END_MESSAGE, END_STREAM) of a DATA frame.
  var data: (streamID: UInt32, payload: [UInt8], endMessage: Bool, endStream: Bool)? {
    if case .data(let id, let payload, let endMessage, let endStream) = self {
      return (id, payload, endMessage, endStream)
    }
    return nil
  }
}

/// A stream id (or GOAWAY last id) with an error code: what tests compare RESETs and GOAWAYs by.
struct StreamCode: Hashable, CustomStringConvertible {
  var id: UInt32
  var code: ErrorCode
  init(_ id: UInt32, _ code: ErrorCode) {
    self.id = id
    self.code = code
  }
  var description: String { "(\(id), \(code))" }
}

extension [Frame] {
  var resets: [StreamCode] { compactMap(\.reset) }
  var goAways: [StreamCode] { compactMap(\.goAway) }
  /// Increments of the WINDOW_UPDATEs on `streamID`.
  func increments(on streamID: UInt32) -> [UInt32] {
    compactMap { frame in frame.windowUpdate.flatMap { $0.streamID == streamID ? $0.increment : nil } }
  }
  /// DATA frames only.
  var dataFrames: [(streamID: UInt32, payload: [UInt8], endMessage: Bool, endStream: Bool)] { compactMap(\.data) }
}
