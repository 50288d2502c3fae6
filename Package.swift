// swift-tools-version:6.1
// Baton depends on nothing but the Swift toolchain: no `dependencies:` here, ever.
import PackageDescription

let strict: [SwiftSetting] = [
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("InternalImportsByDefault"),
  // Nonisolated async functions run on their caller's executor (SE-0461): a handler awaiting
  // the next message stays on its connection's event loop instead of paying an executor
  // switch (and a task-status lock) at every await on the per-message path.
  .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
]

let package = Package(
  name: "Baton",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "BatonServer", targets: ["BatonServer"]),
    .library(name: "BatonClient", targets: ["BatonClient"]),
    .library(name: "BatonTesting", targets: ["BatonTesting"]),
    .executable(name: "baton", targets: ["baton"]),
  ],
  targets: [
    // Pure wire core: frames, codec, settings, codes, state machines. No sockets, clocks or threads.
    .target(name: "BatonCore", swiftSettings: strict),
    // The only C in the package: exposes epoll/eventfd/timerfd, which Glibc does not export.
    .target(name: "CBatonShims"),
    // Linux I/O: every syscall wrapped once, event loops, sockets. Internal to the package.
    .target(name: "BatonPosix", dependencies: ["CBatonShims"], swiftSettings: strict),
    // One multiplexed Baton connection on a socket: shared by server and client.
    .target(name: "BatonTransport", dependencies: ["BatonCore", "BatonPosix"], swiftSettings: strict),
    .target(name: "BatonServer", dependencies: ["BatonCore", "BatonTransport"], swiftSettings: strict),
    .target(name: "BatonClient", dependencies: ["BatonCore", "BatonTransport"], swiftSettings: strict),
    // Interruption tests for users: test servers and clusters, the fault proxy, the call ledger.
    .target(
      name: "BatonTesting", dependencies: ["BatonCore", "BatonPosix", "BatonTransport", "BatonServer"],
      swiftSettings: strict),
    // The `baton` command's logic, as a library so that tests can drive it.
    .target(
      name: "BatonCLI", dependencies: ["BatonServer", "BatonClient", "BatonPosix", "BatonTesting"],
      swiftSettings: strict),
    .executableTarget(name: "baton", dependencies: ["BatonCLI"], swiftSettings: strict),

    .testTarget(name: "BatonCoreTests", dependencies: ["BatonCore"], swiftSettings: strict),
    .testTarget(name: "BatonServerTests", dependencies: ["BatonServer"], swiftSettings: strict),
    .testTarget(name: "BatonPosixTests", dependencies: ["BatonPosix"], swiftSettings: strict),
    // The connection's stream bookkeeping as a value, without sockets.
    .testTarget(name: "BatonTransportTests", dependencies: ["BatonTransport", "BatonCore"], swiftSettings: strict),
    // The client's pieces as values, without sockets.
    .testTarget(name: "BatonClientTests", dependencies: ["BatonClient"], swiftSettings: strict),
    .testTarget(
      name: "BatonTestingTests", dependencies: ["BatonTesting", "BatonClient", "BatonCore", "BatonPosix"],
      swiftSettings: strict),
    .testTarget(
      name: "BatonEndToEndTests",
      dependencies: ["BatonServer", "BatonClient", "BatonCLI", "BatonTransport", "BatonPosix", "BatonTesting"],
      swiftSettings: strict
    ),
  ]
)
