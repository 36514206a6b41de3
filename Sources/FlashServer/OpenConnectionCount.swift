import Synchronization

/// How many `/flash-progress` connections are open. A stopping server waits for them to close
/// themselves (1001, after what was queued for them) before its graceful shutdown closes what is
/// left (with 1000).
final class OpenConnectionCount: Sendable {
    private let count = Mutex(0)

    func opened() { count.withLock { $0 += 1 } }
    func closed() { count.withLock { $0 -= 1 } }

    /// Returns once none is open, or after `seconds`.
    func waitUntilNone(seconds: Double) async {
        let clock = ContinuousClock()
        let deadline = clock.now + .milliseconds(Int(seconds * 1000))
        while count.withLock({ $0 }) > 0, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}
