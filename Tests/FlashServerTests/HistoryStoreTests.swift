import FlashEngine
@testable import FlashServer
import Foundation
import Testing

@Suite final class HistoryStoreTests {
    let path = NSTemporaryDirectory() + "flashctl-history-\(UUID().uuidString)/history.sqlite"

    deinit {
        try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
    }

    func status(_ id: String, _ state: JobState, created: Int64, device: String = "SER1") -> JobStatus {
        JobStatus(
            info: JobInfo(jobId: id, deviceId: device, deviceName: "phone", image: "/images/boot.img", partition: "boot"),
            state: state, stage: "Sending boot", progress: state == .completed ? 100 : 40,
            bytesTransferred: state == .completed ? 4096 : 1024, totalBytes: 4096, transferSpeed: 0,
            estimatedTimeRemaining: nil, error: state == .failed ? "USB connection lost" : nil,
            sha256: state == .completed ? "ab12" : nil, xxh128: state == .completed ? "cd34" : nil, bandwidthLimit: nil,
            createdAt: created, startedAt: created + 5, endedAt: state.isFinished ? created + 1005 : nil)
    }

    @Test func recordsJobsNewestFirstAndUpdatesInPlace() throws {
        let store = try HistoryStore(path: path)
        try store.record(status("job_1", .running, created: 1000))
        try store.record(status("job_2", .running, created: 2000, device: "SER2"))
        try store.record(status("job_1", .completed, created: 1000))
        let entries = try store.recent()
        #expect(entries.map(\.jobId) == ["job_2", "job_1"])
        let done = try #require(entries.last)
        #expect(done.result == "completed")
        #expect(done.sha256 == "ab12")
        #expect(done.xxh128 == "cd34")
        #expect(done.durationMs == 1000)
        #expect(done.averageSpeed == 4096)
        #expect(try store.recent(deviceId: "SER2").map(\.jobId) == ["job_2"])
        #expect(try store.hasCompleted(deviceId: "SER1"))
        #expect(try !store.hasCompleted(deviceId: "SER2"))
    }

    @Test func unfinishedJobsBecomeInterruptedAfterARestart() throws {
        do {
            let store = try HistoryStore(path: path)
            try store.record(status("job_run", .running, created: 1000))
            try store.record(status("job_q", .queued, created: 1100))
            try store.record(status("job_ok", .completed, created: 900))
        }
        let reopened = try HistoryStore(path: path)
        #expect(try reopened.markUnfinishedAsInterrupted(now: 5000) == 2)
        let running = try #require(try reopened.entry(jobId: "job_run"))
        #expect(running.result == "interrupted")
        #expect(running.endedAt == 5000)
        #expect(running.error == "the server stopped while this job was running")
        #expect(try reopened.entry(jobId: "job_ok")?.result == "completed")
        #expect(try reopened.markUnfinishedAsInterrupted(now: 6000) == 0)
    }

    @Test func anUnwritablePathIsAClearError() {
        #expect(throws: FlashError.self) { try HistoryStore(path: "/proc/flashctl/history.sqlite") }
    }
}
