#if canImport(Glibc)
import Glibc
#endif

/// Where the engine reads time from, so progress arithmetic can be tested exactly.
public protocol FlashClock: Sendable {
    /// Monotonic time in nanoseconds; only differences mean anything.
    func monotonicNanos() -> UInt64
    /// Wall-clock time in milliseconds since the Unix epoch, for event timestamps.
    func epochMillis() -> Int64
}

public struct SystemClock: FlashClock {
    public init() {}

    public func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public func epochMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}
