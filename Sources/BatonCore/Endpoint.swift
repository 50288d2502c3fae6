/// Where a server listens or a client connects: a host name or address and a TCP port.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
  /// A host name (resolved when connecting) or an IPv4/IPv6 address.
  public var host: String
  /// The TCP port; 0 asks a server to pick a free one.
  public var port: Int

  /// An endpoint from its parts.
  public init(host: String, port: Int) {
    self.host = host
    self.port = port
  }

  /// Parses `HOST:PORT` or `[IPv6]:PORT`; nil when it is not of that form or the port is out of range.
  public init?(_ text: String) {
    var host: Substring
    let portText: Substring
    if text.hasPrefix("[") {
      guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
      host = text[text.index(after: text.startIndex)..<close]
      portText = text[text.index(close, offsetBy: 2)...]
    } else {
      guard let colon = text.lastIndex(of: ":") else { return nil }
      host = text[..<colon]
      portText = text[text.index(after: colon)...]
    }
    guard !host.isEmpty, !portText.isEmpty, portText.allSatisfy(\.isASCII), portText.allSatisfy(\.isNumber),
      let port = Int(portText), (0...65_535).contains(port)
    else { return nil }
    if host.contains(":") && !text.hasPrefix("[") { return nil }
    self.init(host: String(host), port: port)
  }

  /// `host:port`, with an IPv6 address in brackets: the form ``init(_:)`` parses.
  public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
