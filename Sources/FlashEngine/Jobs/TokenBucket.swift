import Foundation
import Synchronization

/// A bandwidth cap shared by whoever takes from it: a job's own cap, or the cap on all jobs.
///
/// Takers may overdraw: taking more than is available leaves the bucket in debt, and the taker
/// sleeps until the debt is paid at `bytesPerSecond`. A bucket holds at most a quarter of a
/// second of bytes, so an idle period does not allow a long burst above the cap.
public final class TokenBucket: Sendable {
    public let bytesPerSecond: Int64
    private let capacity: Double
    /// Tokens now, and when they were last refilled.
    private let state: Mutex<(tokens: Double, refilledAt: UInt64)>
    private let clock: any FlashClock

    public init(bytesPerSecond: Int64, clock: any FlashClock = SystemClock()) {
        precondition(bytesPerSecond > 0)
        self.bytesPerSecond = bytesPerSecond
        self.capacity = Double(bytesPerSecond) / 4
        self.clock = clock
        state = Mutex((tokens: Double(bytesPerSecond) / 4, refilledAt: clock.monotonicNanos()))
    }

    /// Takes `bytes` and returns how many seconds the taker must wait before using them.
    public func take(_ bytes: Int) -> Double {
        let now = clock.monotonicNanos()
        return state.withLock { state in
            let elapsed = Double(now >= state.refilledAt ? now - state.refilledAt : 0) / 1e9
            state.refilledAt = now
            state.tokens = min(capacity, state.tokens + elapsed * Double(bytesPerSecond)) - Double(bytes)
            return state.tokens >= 0 ? 0 : -state.tokens / Double(bytesPerSecond)
        }
    }
}
