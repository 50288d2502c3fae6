import BatonCore
import Testing

@Suite("ConnectionSettings")
struct ConnectionSettingsTests {
  @Test("the defaults are the numbers of PROTOCOL.md section 8")
  func defaults() {
    let settings = ConnectionSettings.defaults
    #expect(settings.maxFrameSize == 65_536)
    #expect(settings.maxConcurrentStreams == 1_024)
    #expect(settings.initialWindowSize == 1_048_576)
    #expect(settings.connectionWindowSize == 16_777_216)
    #expect(settings.maxMetadataSize == 16_384)
    #expect(settings.maxMessageSize == 4_194_304)
    #expect(ConnectionSettings() == .defaults)
  }

  @Test("wirePairs announces every setting under its id, and parsing them gives the same settings")
  func wirePairsRoundTrip() {
    let settings = ConnectionSettings(
      maxFrameSize: 1024, maxConcurrentStreams: 7, initialWindowSize: 0, connectionWindowSize: 2_147_483_647,
      maxMetadataSize: 99, maxMessageSize: 12)
    let pairs = settings.wirePairs
    #expect(pairs.map(\.0) == [1, 2, 3, 4, 5, 6, 7])
    #expect(pairs.map(\.1) == [1024, 7, 0, 2_147_483_647, 99, 12, 1])
    #expect(ConnectionSettings(wirePairs: pairs) == settings)
  }

  @Test("RESUMPTION (1.1): announced as 1 by default, left out when off, and absent means off (a 1.0 peer)")
  func resumption() {
    #expect(ConnectionSettings.defaults.resumption)
    let off = ConnectionSettings(resumption: false)
    #expect(!off.wirePairs.contains { $0.0 == SettingID.resumption })
    #expect(ConnectionSettings(wirePairs: off.wirePairs) == off)
    #expect(!ConnectionSettings(wirePairs: []).resumption)
    #expect(ConnectionSettings(wirePairs: [(7, 1)]).resumption)
  }

  @Test(
    "received pairs apply over the defaults: absent ids keep defaults, unknown ids are skipped, the last repeat wins")
  func parsing() {
    let settings = ConnectionSettings(wirePairs: [(2, 5), (0x42, 1), (2, 9), (0xFFFF, 0)])
    var expected = ConnectionSettings(resumption: false)  // absent: a 1.0 peer
    expected.maxConcurrentStreams = 9
    #expect(settings == expected)
    #expect(ConnectionSettings(wirePairs: []) == ConnectionSettings(resumption: false))
  }
}
