// swift-tools-version:6.0
// The comparison anchors for `baton bench`: the same echo work on grpc-swift-2. A package of its
// own so that Baton's root Package.swift stays free of dependencies; CI never builds it.
// Build: swift build -c release --scratch-path .build   (or run ../run.sh, which does it)
import PackageDescription

let package = Package(
  name: "BatonAnchors",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(url: "https://github.com/grpc/grpc-swift-2", exact: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport", exact: "2.9.2"),
  ],
  targets: [
    .executableTarget(
      name: "grpc-echo",
      dependencies: [
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
      ]
    )
  ]
)
