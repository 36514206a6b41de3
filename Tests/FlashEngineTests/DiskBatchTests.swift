@testable import FlashEngine
import Foundation
import Synchronization
import Testing

/// One read of an image feeding several disks (files standing in for them), one of which fails
/// mid-write: it ends alone, the others are written whole.
@Suite(.serialized) final class DiskBatchTests {
    private let directory = NSTemporaryDirectory() + "flashctl-batch-\(UUID().uuidString)"

    init() throws {
        try FileManager.default.createDirectory(atPath: directory + "/small", withIntermediateDirectories: true)
    }

    deinit {
        _ = try? run("/bin/umount", [directory + "/small"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    @discardableResult
    private func run(_ tool: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    private func target(_ path: String, size: Int) throws -> String {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: path))
        try handle.truncate(atOffset: UInt64(size))
        try handle.close()
        return path
    }

    @Test func aTargetThatFailsMidWriteEndsAloneAndTheOthersGetEveryByte() throws {
        // A file on a 1 MiB tmpfs: writes past it fail, as on a card that dies (needs root, as CI is).
        #expect(try run("/bin/mount", ["-t", "tmpfs", "-o", "size=1M", "flashctl-test", directory + "/small"]) == 0, "mounting a tmpfs needs root")
        let image = Data((0..<(6 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ $0 >> 12) })
        try image.write(to: URL(fileURLWithPath: directory + "/os.img"))
        let targets = [
            try target(directory + "/a.img", size: 8 << 20),
            try target(directory + "/small/b.img", size: 8 << 20),
            try target(directory + "/c.img", size: 8 << 20),
        ]
        let batch = try DiskBatch.prepare(DiskFlashRequest(imagePath: directory + "/os.img", targets: targets))
        #expect(batch.batchId != nil)
        #expect(Set(batch.jobs.map(\.info.batchId)) == [batch.batchId])
        let events = Mutex<[FlashEvent]>([])
        let outcomes = batch.runAll { job in job.makeProgress(rate: .unlimited) { event in events.withLock { $0.append(event) } } }
        #expect(outcomes.map(\.state) == [.completed, .failed, .completed])
        #expect(outcomes[1].error?.contains("does not fit on \(targets[1])") == true, "\(outcomes[1])")
        #expect(outcomes[0].verified == true && outcomes[2].verified == true)
        for index in [0, 2] {
            #expect(FileManager.default.contents(atPath: targets[index])?.prefix(image.count) == image)
        }
        // Each job told its own story: one flash_failed, for the failing target only.
        let failed = events.withLock { $0 }.filter { if case .failed = $0 { return true } else { return false } }
        #expect(failed.map(\.job.deviceId) == [targets[1]])
    }
}
