import Foundation
import Synchronization

/// A bandwidth cap shared by whoever takes from it: a job's own cap, or the cap on all jobs.
///
/// Takers may overdraw: taking more than is available leaves the bucket in debt, and the taker
/// sleeps until the debt is paid at `bytesPerSecond`. A bucket holds at most `burst` bytes (a
/// quarter of a second's by default), so an idle period or a pause banks no more than that: after
/// it, the pace is the cap again, as on a bus.
public final class TokenBucket: Sendable {
    public let bytesPerSecond: Int64
    private let capacity: Double
    /// Tokens now, and when they were last refilled.
    private let state: Mutex<(tokens: Double, refilledAt: UInt64)>
    private let clock: any FlashClock

    public init(bytesPerSecond: Int64, burst: Int64? = nil, clock: any FlashClock = SystemClock()) {
        precondition(bytesPerSecond > 0)
        self.bytesPerSecond = bytesPerSecond
        self.capacity = Double(max(1, burst ?? bytesPerSecond / 4))
        self.clock = clock
        state = Mutex((tokens: capacity, refilledAt: clock.monotonicNanos()))
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
