import BatonPosix
import Glibc
import Testing

@Suite("SocketAddress")
struct SocketAddressTests {
  @Test("resolving a numeric IPv4 address gives exactly that IPv4 address")
  func resolveIPv4() throws {
    let addresses = try SocketAddress.resolve(host: "127.0.0.1", port: 80)
    #expect(addresses == [SocketAddress(host: "127.0.0.1", port: 80)])
    #expect(addresses.allSatisfy { !$0.isIPv6 })
  }

  @Test("resolving a numeric IPv6 address, with or without brackets, gives that IPv6 address")
  func resolveIPv6() throws {
    let plain = try SocketAddress.resolve(host: "::1", port: 80)
    #expect(plain == [SocketAddress(host: "::1", port: 80)])
    #expect(plain.allSatisfy { $0.isIPv6 })
    #expect(try SocketAddress.resolve(host: "[::1]", port: 80) == plain)
  }

  @Test("resolving localhost gives loopback addresses only, keeping each family")
  func resolveLocalhost() throws {
    let addresses = try SocketAddress.resolve(host: "localhost", port: 80)
    #expect(!addresses.isEmpty)
    for address in addresses {
      #expect(address.port == 80)
      if address.isIPv6 {
        #expect(address.host == "::1")
      } else {
        #expect(address.host.hasPrefix("127."))
      }
    }
    #expect(Set(addresses).count == addresses.count)
  }

  @Test("an out-of-range port is a resolution error, not a crash")
  func resolveBadPort() {
    #expect(throws: ResolutionError.self) {
      _ = try SocketAddress.resolve(host: "127.0.0.1", port: 70_000)
    }
  }

  @Test("description is host:port for IPv4 and [host]:port for IPv6")
  func descriptions() {
    #expect(SocketAddress(host: "127.0.0.1", port: 8080).description == "127.0.0.1:8080")
    #expect(SocketAddress(host: "::1", port: 8080).description == "[::1]:8080")
    #expect(SocketAddress(host: "fe80::1%2", port: 1).description == "[fe80::1%2]:1")
  }

  @Test(
    "listening on [::1]:0 reads back an IPv6 address",
    .enabled(if: hasIPv6Loopback())
  )
  func listenIPv6() throws {
    let fd = try Socket.listen(on: SocketAddress(host: "::1", port: 0))
    defer { Socket.close(fd) }
    let address = try Socket.localAddress(fd)
    #expect(address.host == "::1")
    #expect(address.isIPv6)
    #expect(address.port > 0)
  }
}

/// Whether the kernel has ::1 configured (not every container does).
func hasIPv6Loopback() -> Bool {
  let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
  guard fd >= 0 else {
    return false
  }
  defer { close(fd) }
  var address = sockaddr_in6()
  address.sin6_family = sa_family_t(AF_INET6)
  address.sin6_addr = in6addr_loopback
  let bound = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
    }
  }
  return bound == 0
}
