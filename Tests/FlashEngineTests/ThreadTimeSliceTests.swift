@testable import FlashEngine
import Foundation
import Synchronization
import Testing

@Suite struct ThreadTimeSliceTests {
    /// A job's thread is started from an event loop on the default slice: it must have the short
    /// slice from its first instruction, and the loop must get its own slice back.
    @Test func aThreadStartedResponsiveHasTheShortSliceAtOnceAndTheStarterKeepsItsOwn() {
        let seen = Mutex<UInt64?>(nil)
        let ran = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        let starter = Thread {
            ThreadTimeSlice.request(0)
            let own = ThreadTimeSlice.current
            let granted = ThreadTimeSlice.request(ThreadTimeSlice.responsive) && ThreadTimeSlice.current == ThreadTimeSlice.responsive
                && own != ThreadTimeSlice.responsive
            ThreadTimeSlice.request(0)
            let started = Thread {
                seen.withLock { $0 = ThreadTimeSlice.current }
                ran.signal()
            }
            ThreadTimeSlice.startResponsive(started)
            ran.wait()
            let after = ThreadTimeSlice.current
            if granted {
                #expect(seen.withLock { $0 } == ThreadTimeSlice.responsive)
                #expect(after == own, "the starting thread gets its own slice back")
            } else {
                // A kernel without per-thread slices: nothing changes, and the thread still runs.
                #expect(seen.withLock { $0 } == own)
            }
            done.signal()
        }
        starter.start()
        done.wait()
    }
}
