import Foundation

/// A bandwidth cap shared by whoever takes from it: a job's own cap, or the cap on all jobs.
///
/// Takers may overdraw: taking more than is available leaves the bucket in debt, and the taker
/// sleeps until the debt is paid at `bytesPerSecond`. A bucket holds at most a quarter of a
/// second of bytes, so an idle period does not allow a long burst above the cap.
public final class TokenBucket: @unchecked Sendable {
    public let bytesPerSecond: Int64
    private let capacity: Double
    private let lock = NSLock()
    private var tokens: Double
    private var refilledAt: UInt64
    private let clock: any FlashClock

    public init(bytesPerSecond: Int64, clock: any FlashClock = SystemClock()) {
        precondition(bytesPerSecond > 0)
        self.bytesPerSecond = bytesPerSecond
        self.capacity = Double(bytesPerSecond) / 4
        self.tokens = capacity
        self.clock = clock
        self.refilledAt = clock.monotonicNanos()
    }

    /// Takes `bytes` and returns how many seconds the taker must wait before using them.
    public func take(_ bytes: Int) -> Double {
        lock.lock()
        defer { lock.unlock() }
        let now = clock.monotonicNanos()
        let elapsed = Double(now >= refilledAt ? now - refilledAt : 0) / 1e9
        refilledAt = now
        tokens = min(capacity, tokens + elapsed * Double(bytesPerSecond))
        tokens -= Double(bytes)
        return tokens >= 0 ? 0 : -tokens / Double(bytesPerSecond)
    }
}
