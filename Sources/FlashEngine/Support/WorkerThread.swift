import Foundation
import Synchronization

/// The one way the engine starts a thread for blocking work (a job, a disk batch's reader, an
/// image's read-ahead): named as `top -H` and `perf` show it, with the time slice its work needs,
/// and joinable.
public final class WorkerThread: Sendable {
    private let finished = Mutex(false)
    private let ended = NSCondition()

    private init() {}

    /// Runs `body` on a new thread called `name` (Linux keeps its first 15 bytes). `responsive`
    /// gives it `ThreadTimeSlice.responsive` from its first wake-up: for threads that wait on a
    /// device step by step.
    @discardableResult
    public static func start(name: String, responsive: Bool = false, _ body: @escaping @Sendable () -> Void) -> WorkerThread {
        let worker = WorkerThread()
        let thread = Thread {
            // Set from the thread itself: a name given before `start()` does not reach Linux.
            Thread.current.name = name
            body()
            worker.ended.lock()
            worker.finished.withLock { $0 = true }
            worker.ended.broadcast()
            worker.ended.unlock()
        }
        thread.stackSize = 1 << 20
        if responsive {
            ThreadTimeSlice.startResponsive(thread)
        } else {
            thread.start()
        }
        return worker
    }

    /// Waits until the thread's body has returned.
    public func join() {
        ended.lock()
        while !finished.withLock({ $0 }) { ended.wait() }
        ended.unlock()
    }
}
