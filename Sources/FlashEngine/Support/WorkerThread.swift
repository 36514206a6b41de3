import Foundation

/// The one way the engine starts a thread for blocking work (a job, a disk batch's reader): named
/// as `top -H` and `perf` show it, with the time slice its work needs.
public enum WorkerThread {
    /// Runs `body` on a new thread called `name` (Linux keeps its first 15 bytes). `responsive`
    /// gives it `ThreadTimeSlice.responsive` from its first wake-up: for threads that wait on a
    /// device step by step.
    public static func start(name: String, responsive: Bool = false, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread {
            // Set from the thread itself: a name given before `start()` does not reach Linux.
            Thread.current.name = name
            body()
        }
        thread.stackSize = 1 << 20
        if responsive {
            ThreadTimeSlice.startResponsive(thread)
        } else {
            thread.start()
        }
    }
}
