import Synchronization
@testable import FlashEngine

/// A clock that only moves when the test says so.
final class ManualClock: FlashClock {
    private let nanos = Mutex<UInt64>(0)
    let epochBase: Int64

    init(epochBase: Int64 = 1_703_001_234_000) {
        self.epochBase = epochBase
    }

    func monotonicNanos() -> UInt64 { nanos.withLock { $0 } }
    func epochMillis() -> Int64 { epochBase + Int64(monotonicNanos() / 1_000_000) }

    func advance(ms: UInt64) { nanos.withLock { $0 += ms * 1_000_000 } }
    var millis: UInt64 { monotonicNanos() / 1_000_000 }
}
