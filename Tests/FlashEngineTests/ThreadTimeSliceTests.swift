@testable import FlashEngine
import Foundation
import Synchronization
import Testing

@Suite struct ThreadTimeSliceTests {
    /// What the starting thread saw, read back on the test's own thread (expectations are
    /// recorded there, not on threads the test starts).
    private struct Seen {
        var ownSlice: UInt64?
        var granted = false
        var startedThreadSlice: UInt64?
        var sliceAfterStarting: UInt64?
    }

    /// A job's thread is started from an event loop on the default slice: it must have the short
    /// slice from its first instruction, and the loop must get its own slice back.
    @Test func aThreadStartedResponsiveHasTheShortSliceAtOnceAndTheStarterKeepsItsOwn() {
        let seen = Mutex(Seen())
        let ran = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        let starter = Thread {
            ThreadTimeSlice.request(0)
            let own = ThreadTimeSlice.current
            let granted = ThreadTimeSlice.request(ThreadTimeSlice.responsive) && ThreadTimeSlice.current == ThreadTimeSlice.responsive
                && own != ThreadTimeSlice.responsive
            ThreadTimeSlice.request(0)
            let started = try! WorkerThread.start(name: "responsive", responsive: true) {
                let slice = ThreadTimeSlice.current
                seen.withLock { $0.startedThreadSlice = slice }
                ran.signal()
            }
            ran.wait()
            started.join()
            let after = ThreadTimeSlice.current
            seen.withLock {
                $0.ownSlice = own
                $0.granted = granted
                $0.sliceAfterStarting = after
            }
            done.signal()
        }
        starter.start()
        done.wait()
        let result = seen.withLock { $0 }
        if result.granted {
            #expect(result.startedThreadSlice == ThreadTimeSlice.responsive)
            #expect(result.sliceAfterStarting == result.ownSlice, "the starting thread gets its own slice back")
        } else {
            // A kernel without per-thread slices: nothing changes, and the thread still runs.
            #expect(result.startedThreadSlice == result.ownSlice)
        }
    }
}
