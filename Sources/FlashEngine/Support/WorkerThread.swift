#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// The one way the engine starts a thread for blocking work (a job, a disk batch's reader, an
/// image's read-ahead, the emulator's connections): named as `top -H` and `perf` show it, with the
/// time slice its work needs, and joinable: `join()` returns once the thread has ended, so a
/// reader that is closed leaves no thread behind. A thread nobody joins is detached when its
/// `WorkerThread` goes, and cleans up after itself when it ends.
public final class WorkerThread: @unchecked Sendable {
    private let handle: pthread_t
    /// Whether the thread was joined (or detached): a pthread may be joined only once.
    private let released = Mutex(false)

    private init(handle: pthread_t) {
        self.handle = handle
    }

    deinit {
        released.withLock { released in
            if !released { pthread_detach(handle) }
        }
    }

    /// Runs `body` on a new thread called `name` (Linux keeps its first 15 bytes). `responsive`
    /// gives it `ThreadTimeSlice.responsive` from its first wake-up: for threads that wait on a
    /// device step by step. Throws when the system has no thread to give (its thread or memory
    /// limit): the caller fails its own work, and the process goes on serving the rest.
    @discardableResult
    public static func start(name: String, responsive: Bool = false, _ body: @escaping @Sendable () -> Void) throws -> WorkerThread {
        let work = Unmanaged.passRetained(Work(name: name, body: body)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, 1 << 20)
        // Linux gives a new thread the slice of the one that creates it: lend it for the creation.
        let borrowed = responsive && ThreadTimeSlice.current != ThreadTimeSlice.responsive && ThreadTimeSlice.request(ThreadTimeSlice.responsive)
        defer { if borrowed { ThreadTimeSlice.request(0) } }
        var handle = pthread_t()
        let result = pthread_create(&handle, &attributes, { context in
            let work = Unmanaged<Work>.fromOpaque(context!).takeRetainedValue()
            // Set from the thread itself: Foundation names the calling thread in Linux.
            Thread.current.name = work.name
            work.body()
            return nil
        }, work)
        guard result == 0 else {
            Unmanaged<Work>.fromOpaque(work).release()
            throw FlashError(.io, "cannot start a thread for \(name): \(errnoText(result))")
        }
        return WorkerThread(handle: handle)
    }

    /// Waits until the thread has ended. Safe to call more than once.
    public func join() {
        released.withLock { released in
            guard !released else { return }
            pthread_join(handle, nil)
            released = true
        }
    }

    private final class Work {
        let name: String
        let body: @Sendable () -> Void

        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
}
