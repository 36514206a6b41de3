import CLinuxSched
import Foundation

/// The time slice Linux gives the calling thread, for threads that must run soon after they wake.
///
/// A flash is a chain of short steps that each wait on the other side: connect, a command and
/// its reply, `download`, `flash`. On a busy machine (a server writing to a thousand dashboards
/// fills both cores at the very moment jobs start and end), a thread that wakes for such a step
/// waits for a core for up to a whole slice, a few milliseconds each time. Linux's EEVDF
/// scheduler (6.12 and later) lets a thread that asked for a short slice run ahead of
/// longer-sliced ones when it wakes, without giving it more CPU than its share and without any
/// privilege. Older kernels refuse or ignore the request, and nothing changes.
public enum ThreadTimeSlice {
    /// What a thread that waits on a device asks for: the shortest slice Linux grants (0.1 ms).
    public static let responsive: UInt64 = 100_000

    /// Asks for `nanoseconds` (0: the kernel's default); false if the kernel refused.
    @discardableResult
    public static func request(_ nanoseconds: UInt64) -> Bool {
        flashctl_set_time_slice(nanoseconds) == 0
    }

    /// The calling thread's slice in nanoseconds as the kernel reports it (Linux 6.12 and later
    /// report the default slice, not 0, for a thread that asked for none), nil if it cannot say.
    public static var current: UInt64? {
        let slice = flashctl_time_slice()
        return slice < 0 ? nil : UInt64(slice)
    }

    /// For a thread that asked for `responsive`: runs `body` with the kernel's default slice,
    /// then asks for `responsive` again. Other threads run `body` as they are. For bulk work that
    /// is buffered ahead of the device and needs no quick wake-ups: with the short slice it would
    /// run ahead of the threads writing to the dashboards.
    public static func withDefault<T>(_ body: () throws -> T) rethrows -> T {
        guard current == responsive else { return try body() }
        request(0)
        defer { request(responsive) }
        return try body()
    }
}
