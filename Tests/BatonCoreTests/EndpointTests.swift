import BatonCore
import Testing

@Suite("Endpoint")
struct EndpointTests {
  @Test(
    "HOST:PORT and [IPv6]:PORT parse into host and port",
    arguments: [
      ("127.0.0.1:80", "127.0.0.1", 80), ("[::1]:80", "::1", 80), ("localhost:0", "localhost", 0),
      ("example.com:65535", "example.com", 65_535), ("[fe80::1%eth0]:8080", "fe80::1%eth0", 8080),
    ])
  func parses(_ text: String, host: String, port: Int) throws {
    let endpoint = try #require(Endpoint(text))
    #expect(endpoint.host == host)
    #expect(endpoint.port == port)
    #expect(endpoint == Endpoint(host: host, port: port))
  }

  @Test(
    "text that is not HOST:PORT or [IPv6]:PORT, or whose port is out of range, is nil",
    arguments: [
      "host", "", ":80", "host:", "host:http", "host:65536", "host:-1", "host:99999999999999999999",
      "::1:80", "[::1]", "[::1]80", "[]:80", "[::1", "1.2.3.4:80:90",
    ])
  func rejects(_ text: String) {
    #expect(Endpoint(text) == nil)
  }

  @Test(
    "description writes IPv6 hosts in brackets and parses back to the same endpoint",
    arguments: ["127.0.0.1:80", "[::1]:443", "example.com:1"])
  func descriptionRoundTrip(_ text: String) throws {
    let endpoint = try #require(Endpoint(text))
    #expect(endpoint.description == text)
    #expect(Endpoint(endpoint.description) == endpoint)
  }
}
