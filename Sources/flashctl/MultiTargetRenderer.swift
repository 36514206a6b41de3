import FlashEngine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The terminal view of one image written to several disks: one bar for all of them (bytes and
/// speeds added up, the longest ETA, each target's percentage in the stage), and a line per
/// target when it ends. JSON output needs none of this: every target's events are printed as
/// they come.
final class MultiTargetRenderer: Sendable {
    private let bar: ProgressRenderer
    private let combined: JobInfo
    private let state = Mutex<[String: Entry]>([:])

    private struct Entry {
        var deviceId: String
        var snapshot: ProgressSnapshot?
        var ended = false
        var order: Int
    }

    init(targets: [JobInfo]) {
        bar = ProgressRenderer(json: false)
        combined = JobInfo(jobId: "all", deviceId: "all")
        state.withLock { entries in
            for (index, job) in targets.enumerated() {
                entries[job.jobId] = Entry(deviceId: job.deviceId, order: index)
            }
        }
    }

    func render(_ event: FlashEvent) {
        let job = event.job
        switch event {
        case .started:
            return
        case .progress(_, let snapshot, _):
            let line = state.withLock { entries -> ProgressSnapshot? in
                entries[job.jobId]?.snapshot = snapshot
                return Self.combine(entries)
            }
            if let line { bar.render(.progress(combined, line, timestamp: 0)) }
        case .completed(_, let summary, _):
            state.withLock { $0[job.jobId]?.ended = true }
            bar.finish()
            ProgressRenderer.writeAll("\(job.deviceId): done, \(HumanFormat.bytes(summary.bytes)) in \(HumanFormat.duration(milliseconds: summary.durationMs)) (\(HumanFormat.speed(summary.averageSpeed)) average)\n", to: STDOUT_FILENO)
        case .failed(_, let error, _, _):
            state.withLock { $0[job.jobId]?.ended = true }
            bar.finish()
            ProgressRenderer.writeAll("error: \(job.deviceId): \(ProgressRenderer.printable(error))\n", to: STDERR_FILENO)
        case .queued, .paused, .resumed, .deviceMessage:
            return
        }
    }

    private static func combine(_ entries: [String: Entry]) -> ProgressSnapshot? {
        let live = entries.values.filter { !$0.ended }.sorted { $0.order < $1.order }
        let snapshots = live.compactMap(\.snapshot)
        guard !snapshots.isEmpty else { return nil }
        let bytes = snapshots.reduce(Int64(0)) { $0 + $1.bytesTransferred }
        let total = snapshots.reduce(Int64(0)) { $0 + $1.totalBytes }
        let stage = live.map { entry in
            let name = entry.deviceId.split(separator: "/").last.map(String.init) ?? entry.deviceId
            return "\(name) \(HumanFormat.percent(entry.snapshot?.progress ?? 0))"
        }.joined(separator: ", ") as String
        return ProgressSnapshot(
            progress: total > 0 ? min(99.9, Double(bytes) * 100 / Double(total)) : 0, stage: stage,
            bytesTransferred: bytes, totalBytes: total,
            transferSpeed: snapshots.reduce(Int64(0)) { $0 + $1.transferSpeed },
            estimatedTimeRemaining: snapshots.compactMap(\.estimatedTimeRemaining).max())
    }
}
