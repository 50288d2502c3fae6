@_exported public import BatonTransport

// A user imports BatonClient and gets the wire types a caller needs (Endpoint, Metadata,
// ConnectionSettings, RPCError, ErrorCode, CallShape) and the logging seam, and nothing else of the core:
// frames, codec, buffers and the connection core stay public to the package's modules only,
// where their inlinable code is specialized across modules on the per-message path (`package`
// access lost that, and half the 64 B streaming rate with it).
@_exported public import enum BatonCore.CallShape
@_exported public import struct BatonCore.ConnectionSettings
@_exported public import struct BatonCore.Endpoint
@_exported public import struct BatonCore.ErrorCode
@_exported public import struct BatonCore.Metadata
@_exported public import protocol BatonCore.MetricsExposition
@_exported public import struct BatonCore.PrometheusPage
@_exported public import struct BatonCore.RPCError
