@_exported public import BatonServer

// A test imports BatonTesting and gets the server it drives (Router, Server and the wire types
// BatonServer re-exports) plus the one core type a fault plan names, and nothing else of the
// core: frames and the codec stay public to the package's modules only, as for the products.
@_exported public import struct BatonCore.ErrorCode
