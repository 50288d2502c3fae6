import CBatonShims
import Glibc

/// An IPv4 or IPv6 address and TCP port, kept as text.
///
/// `host` is a numeric address ("127.0.0.1", "::1", "fe80::1%eth0"); names such as
/// "localhost" must go through ``resolve(host:port:)`` first. The family is implied by
/// the text: a host containing ":" is IPv6.
package struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
  /// The numeric host, without brackets.
  package var host: String
  /// The port, 0...65535 (0 asks the kernel to pick one when listening).
  package var port: Int

  package init(host: String, port: Int) {
    self.host = host
    self.port = port
  }

  /// Whether ``host`` is an IPv6 address.
  package var isIPv6: Bool {
    self.host.utf8.contains(UInt8(ascii: ":"))
  }

  /// `"127.0.0.1:8080"` or `"[::1]:8080"`.
  package var description: String {
    self.isIPv6 ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
  }

  /// Whether `host` is a numeric IPv4 or IPv6 address (brackets allowed), which needs no
  /// resolver. Does not block.
  package static func isNumeric(host: String) -> Bool {
    var name = Substring(host)
    if name.hasPrefix("["), name.hasSuffix("]") { name = name.dropFirst().dropLast() }
    if let percent = name.firstIndex(of: "%") { name = name[..<percent] }  // an IPv6 zone
    var buffer = (UInt64(0), UInt64(0))
    return withUnsafeMutableBytes(of: &buffer) { bytes in
      inet_pton(AF_INET, String(name), bytes.baseAddress) == 1
        || inet_pton(AF_INET6, String(name), bytes.baseAddress) == 1
    }
  }

  /// Resolves `host` (a name or a numeric address, brackets allowed) to TCP addresses with
  /// `getaddrinfo`, in the resolver's order of preference, without duplicates.
  ///
  /// Blocks the calling thread while the resolver works: do not call it on an event loop.
  /// - Throws: ``ResolutionError`` when the name cannot be resolved, ``IOError`` when the
  ///   resolver fails with a system error.
  package static func resolve(host: String, port: Int) throws -> [SocketAddress] {
    guard (0...65_535).contains(port) else {
      throw ResolutionError(code: EAI_SERVICE, host: host, port: port)
    }
    var name = Substring(host)
    if name.hasPrefix("["), name.hasSuffix("]") {
      name = name.dropFirst().dropLast()
    }

    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_protocol = Int32(IPPROTO_TCP)
    hints.ai_flags = AI_NUMERICSERV

    var list: UnsafeMutablePointer<addrinfo>? = nil
    let status = getaddrinfo(String(name), String(port), &hints, &list)
    defer {
      if let list {
        freeaddrinfo(list)
      }
    }
    if status == EAI_SYSTEM {
      throw IOError(errno: errno, call: "getaddrinfo")
    }
    guard status == 0 else {
      throw ResolutionError(code: status, host: host, port: port)
    }

    var addresses: [SocketAddress] = []
    var cursor = list
    while let entry = cursor {
      cursor = entry.pointee.ai_next
      guard let raw = entry.pointee.ai_addr,
        let address = try? SocketAddress(UnsafeRawPointer(raw), call: "getaddrinfo")
      else {
        continue
      }
      if !addresses.contains(address) {
        addresses.append(address)
      }
    }
    return addresses
  }

  /// Reads a `sockaddr_in` or `sockaddr_in6`; other families throw EAFNOSUPPORT.
  init(_ address: UnsafeRawPointer, call: String) throws(IOError) {
    let family = Int32(address.loadUnaligned(as: sockaddr.self).sa_family)
    switch family {
    case AF_INET:
      let ipv4 = address.loadUnaligned(as: sockaddr_in.self)
      let host = try withUnsafeBytes(of: ipv4.sin_addr) { (bytes) throws(IOError) -> String in
        try Self.presentation(family: AF_INET, bytes, call: call)
      }
      self.init(host: host, port: Int(UInt16(bigEndian: ipv4.sin_port)))
    case AF_INET6:
      let ipv6 = address.loadUnaligned(as: sockaddr_in6.self)
      var host = try withUnsafeBytes(of: ipv6.sin6_addr) { (bytes) throws(IOError) -> String in
        try Self.presentation(family: AF_INET6, bytes, call: call)
      }
      if ipv6.sin6_scope_id != 0 {
        host += "%\(ipv6.sin6_scope_id)"
      }
      self.init(host: host, port: Int(UInt16(bigEndian: ipv6.sin6_port)))
    default:
      throw IOError(errno: EAFNOSUPPORT, call: call)
    }
  }

  private static func presentation(
    family: Int32,
    _ address: UnsafeRawBufferPointer,
    call: String
  ) throws(IOError) -> String {
    // INET6_ADDRSTRLEN (46) covers both families.
    var buffer = (
      UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0)
    )
    let text: String? = withUnsafeMutableBytes(of: &buffer) { bytes in
      guard let base = bytes.baseAddress?.assumingMemoryBound(to: CChar.self),
        inet_ntop(family, address.baseAddress, base, socklen_t(bytes.count)) != nil
      else {
        return nil
      }
      return String(cString: base)
    }
    guard let text else {
      throw IOError(errno: errno, call: "inet_ntop")
    }
    return text
  }

  /// Calls `body` with this address as a `sockaddr`.
  /// - Throws: ``IOError`` with EINVAL (call "inet_pton") if the host is not numeric or
  ///   the port is out of range, or whatever `body` throws.
  func withSocketAddress<Result>(
    _ body: (UnsafePointer<sockaddr>, socklen_t) throws(IOError) -> Result
  ) throws(IOError) -> Result {
    guard (0...65_535).contains(self.port) else {
      throw IOError(errno: EINVAL, call: "inet_pton")
    }
    let port = in_port_t(self.port).bigEndian
    if self.isIPv6 {
      var ipv6 = sockaddr_in6()
      ipv6.sin6_family = sa_family_t(AF_INET6)
      ipv6.sin6_port = port
      var text = Substring(self.host)
      if let percent = text.firstIndex(of: "%") {
        let zone = String(text[text.index(after: percent)...])
        text = text[..<percent]
        let scope = UInt32(zone) ?? if_nametoindex(zone)
        guard scope != 0 else {
          throw IOError(errno: EINVAL, call: "inet_pton")
        }
        ipv6.sin6_scope_id = scope
      }
      guard inet_pton(AF_INET6, String(text), &ipv6.sin6_addr) == 1 else {
        throw IOError(errno: EINVAL, call: "inet_pton")
      }
      return try Self.asSocketAddress(&ipv6, body)
    } else {
      var ipv4 = sockaddr_in()
      ipv4.sin_family = sa_family_t(AF_INET)
      ipv4.sin_port = port
      guard inet_pton(AF_INET, self.host, &ipv4.sin_addr) == 1 else {
        throw IOError(errno: EINVAL, call: "inet_pton")
      }
      return try Self.asSocketAddress(&ipv4, body)
    }
  }

  /// The address family for `socket(2)`.
  var family: Int32 {
    self.isIPv6 ? AF_INET6 : AF_INET
  }

  private static func asSocketAddress<Storage, Result>(
    _ storage: inout Storage,
    _ body: (UnsafePointer<sockaddr>, socklen_t) throws(IOError) -> Result
  ) throws(IOError) -> Result {
    let length = socklen_t(MemoryLayout<Storage>.size)
    return try withUnsafeBytes(of: &storage) { (bytes) throws(IOError) -> Result in
      guard let base = bytes.baseAddress else {
        throw IOError(errno: EINVAL, call: "inet_pton")
      }
      return try body(base.assumingMemoryBound(to: sockaddr.self), length)
    }
  }
}
