/// The limits one side announces in its SETTINGS frame: each value bounds what the *peer* may send.
///
/// Until a side has the peer's SETTINGS it assumes ``defaults`` for the peer (PROTOCOL.md, "Settings").
public struct ConnectionSettings: Hashable, Sendable {
  /// Largest frame payload this side accepts. Default 65,536; range 1,024 ... 16,777,215.
  public var maxFrameSize: UInt32
  /// Streams the peer may have open at once towards this side. Default 1,024.
  public var maxConcurrentStreams: UInt32
  /// Flow-control credit per stream, in DATA payload bytes. Default 1 MiB.
  public var initialWindowSize: UInt32
  /// Flow-control credit for the whole connection. Default 16 MiB.
  public var connectionWindowSize: UInt32
  /// Largest encoded metadata block (OPEN, HEADERS, TRAILERS). Default 16 KiB; at least
  /// ``minMetadataSize``, so that a status (TRAILERS with an empty block) can always be sent.
  public var maxMetadataSize: UInt32
  /// Largest reassembled message. Default 4 MiB.
  public var maxMessageSize: UInt32
  /// Announces protocol 1.1's resumable streams (PROTOCOL.md 18); they are on for a connection
  /// when both sides announce it. Default true. A peer that does not announce it (a 1.0 peer)
  /// counts as false.
  public var resumption: Bool

  /// 64 KiB frames, 1,024 streams, 1 MiB per-stream and 16 MiB connection windows,
  /// 16 KiB metadata, 4 MiB messages.
  public static var defaults: ConnectionSettings {
    ConnectionSettings(
      maxFrameSize: 65_536, maxConcurrentStreams: 1_024, initialWindowSize: 1 << 20,
      connectionWindowSize: 1 << 24, maxMetadataSize: 16_384, maxMessageSize: 4 << 20)
  }

  /// Any values; each defaults as documented on its property. ``invalidReason`` says whether the protocol allows them.
  public init(
    maxFrameSize: UInt32 = 65_536, maxConcurrentStreams: UInt32 = 1_024,
    initialWindowSize: UInt32 = 1 << 20, connectionWindowSize: UInt32 = 1 << 24,
    maxMetadataSize: UInt32 = 16_384, maxMessageSize: UInt32 = 4 << 20, resumption: Bool = true
  ) {
    self.resumption = resumption
    self.maxFrameSize = maxFrameSize
    self.maxConcurrentStreams = maxConcurrentStreams
    self.initialWindowSize = initialWindowSize
    self.connectionWindowSize = connectionWindowSize
    self.maxMetadataSize = maxMetadataSize
    self.maxMessageSize = maxMessageSize
  }

  /// The values PROTOCOL.md allows for ``maxFrameSize``.
  public static let maxFrameSizeRange: ClosedRange<UInt32> = 1_024...16_777_215
  /// The smallest MAX_METADATA_SIZE a peer may announce (PROTOCOL.md 8): room for an empty
  /// block (2 bytes) and a few small entries, so that every call can be given its status.
  public static let minMetadataSize: UInt32 = 64

  /// Why these settings cannot be announced, or nil if they can: each value within the range
  /// PROTOCOL.md 8 allows (a peer would fail the connection on any other).
  public var invalidReason: String? {
    if !Self.maxFrameSizeRange.contains(maxFrameSize) {
      return
        "maxFrameSize \(maxFrameSize) is outside \(Self.maxFrameSizeRange.lowerBound)...\(Self.maxFrameSizeRange.upperBound)"
    }
    if initialWindowSize > Self.maxWindow { return "initialWindowSize \(initialWindowSize) exceeds 2^31-1" }
    if connectionWindowSize > Self.maxWindow { return "connectionWindowSize \(connectionWindowSize) exceeds 2^31-1" }
    if maxMetadataSize < Self.minMetadataSize {
      return "maxMetadataSize \(maxMetadataSize) is below the protocol's minimum of \(Self.minMetadataSize)"
    }
    return nil
  }
  /// The largest flow-control window (2^31-1).
  public static let maxWindow: UInt32 = 0x7FFF_FFFF

  /// The (id, value) pairs of a SETTINGS frame announcing these values.
  package var wirePairs: [(UInt16, UInt32)] {
    [
      (SettingID.maxFrameSize, maxFrameSize), (SettingID.maxConcurrentStreams, maxConcurrentStreams),
      (SettingID.initialWindowSize, initialWindowSize),
      (SettingID.connectionWindowSize, connectionWindowSize),
      (SettingID.maxMetadataSize, maxMetadataSize), (SettingID.maxMessageSize, maxMessageSize),
    ] + (resumption ? [(SettingID.resumption, UInt32(1))] : [])
  }

  /// Applies received pairs over the defaults; unknown ids are skipped (the decoder already
  /// range-checked known ones).
  package init(wirePairs: [(UInt16, UInt32)]) {
    self = .defaults
    resumption = false  // absent: a 1.0 peer
    for (id, value) in wirePairs {
      switch id {
      case SettingID.maxFrameSize: maxFrameSize = value
      case SettingID.maxConcurrentStreams: maxConcurrentStreams = value
      case SettingID.initialWindowSize: initialWindowSize = value
      case SettingID.connectionWindowSize: connectionWindowSize = value
      case SettingID.maxMetadataSize: maxMetadataSize = value
      case SettingID.maxMessageSize: maxMessageSize = value
      case SettingID.resumption: resumption = value == 1
      default: continue
      }
    }
  }
}

/// SETTINGS identifiers (PROTOCOL.md, "Settings").
public enum SettingID {
  public static let maxFrameSize: UInt16 = 0x1
  public static let maxConcurrentStreams: UInt16 = 0x2
  public static let initialWindowSize: UInt16 = 0x3
  public static let connectionWindowSize: UInt16 = 0x4
  public static let maxMetadataSize: UInt16 = 0x5
  public static let maxMessageSize: UInt16 = 0x6
  /// 1.1: 1 announces resumable streams (PROTOCOL.md 18).
  public static let resumption: UInt16 = 0x7
}
