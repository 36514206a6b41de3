import ArgumentParser
import FlashEngine
#if canImport(Glibc)
import Glibc
#endif

/// What a person needs after Ctrl-C (or SIGTERM): whether the partition or disk was touched, and
/// the shell's status for a command ended by that signal (128 + its number: 130 for Ctrl-C).
enum CancelReport {
    /// For a fastboot partition: downloaded data changes nothing until the device is told to write it.
    static func fastboot(_ outcome: JobOutcome, partition: String, device: String) -> String {
        if outcome.targetTouched {
            return "cancelled while \(device) was writing \(partition): the partition may now be incomplete; flash it again"
        }
        return "cancelled before anything was written to \(partition) on \(device)"
    }

    /// For a disk (or a file standing in for one); `imageBytes` is the image's size when known.
    static func disk(_ outcome: JobOutcome, path: String, imageBytes: Int64?) -> String {
        guard outcome.targetTouched else { return "cancelled before anything was written to \(path)" }
        let written = HumanFormat.bytes(outcome.bytesSent)
        if let imageBytes, outcome.bytesSent >= imageBytes {
            return "cancelled after writing all \(written) to \(path), before it was verified"
        }
        return "cancelled after writing \(written) to \(path): its contents are now incomplete"
    }

    /// Prints the lines, then ends flashctl with the signal's status.
    static func exit(lines: [String], signal: Int32) -> ExitCode {
        for line in lines { ProgressRenderer.writeAll("flashctl: \(line)\n", to: STDERR_FILENO) }
        return ExitCode(128 + signal)
    }
}
