import Glibc
import NIOCore

/// Sets the scheduling priority (niceness) of the threads that serve dashboards and the API.
///
/// Those threads use little CPU but must get it at once: when flashing keeps every core busy
/// (decompression, many devices), a progress message otherwise waits behind the flash threads'
/// time slices. Flash threads keep their normal priority. Linux keeps a niceness per thread, so
/// each event loop sets its own. Below 0 needs root or CAP_SYS_NICE (or RLIMIT_NICE).
enum EventLoopPriority {
    /// True if every thread of `group` now runs at `niceness`.
    static func set(_ niceness: Int32, on group: any EventLoopGroup) async -> Bool {
        var allSet = true
        for loop in group.makeIterator() {
            let set = (try? await loop.submit { setThreadNiceness(niceness) }.get()) ?? false
            allSet = allSet && set
        }
        return allSet
    }

    /// On Linux, PRIO_PROCESS with id 0 means the calling thread (the kernel's `current`).
    private static func setThreadNiceness(_ niceness: Int32) -> Bool {
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, niceness) == 0
    }
}
