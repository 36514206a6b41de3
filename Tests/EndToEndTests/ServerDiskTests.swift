import Foundation
import XCTest

/// Disks through `flashctl serve` as a dashboard or a script uses them: listed with a confirm
/// token, written and read back by a job, refused with the reason, several fed by one read.
final class ServerDiskTests: XCTestCase {
    private var loops: [LoopDevice] = []
    private var server: ServeProcess!
    private var work = ""

    override func setUpWithError() throws {
        server = try ServeProcess(arguments: [])
        work = server.base + "/work"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    override func tearDown() {
        server.removeFiles()
        loops.forEach { $0.detach() }
        loops = []
    }

    private func loop(_ size: Int, fill: UInt8 = 0xAB, failingAfter limit: Int? = nil) throws -> LoopDevice {
        let device = try LoopDevice(size: size, fill: fill, failingAfter: limit)
        loops.append(device)
        return device
    }

    private func curl(_ arguments: [String]) throws -> CommandResult {
        try ProcessRunner.run("/usr/bin/curl", ["-sS"] + arguments, timeout: 30)
    }

    /// `POST /api/flash/start`; the HTTP status and the JSON answer.
    private func start(_ body: [String: Any]) throws -> (status: Int, answer: [String: Any]) {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)
        let result = try curl(["-w", "\n%{http_code}", "-X", "POST", "-d", json, "\(server.url)/api/flash/start"])
        let lines = result.stdout.split(separator: "\n")
        let answer = lines.first.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] } ?? [:]
        return (Int(lines.last ?? "") ?? 0, answer)
    }

    private func listedDisk(_ path: String) throws -> [String: Any]? {
        let devices = try curl(["\(server.url)/api/devices"]).events.first?["devices"] as? [[String: Any]] ?? []
        return devices.first { $0["deviceId"] as? String == path }
    }

    private func image(_ size: Int = 6 << 20 + 4096 * 3, name: String = "os.img") throws -> (data: Data, path: String) {
        let data = DiskImages.withHoles(size)
        try server.write(image: name, data)
        return (data, server.images + "/" + name)
    }

    func testADiskIsListedWrittenVerifiedAndRecorded() throws {
        let (data, _) = try image()
        try DiskImages.tool("xz -k -1 -T1 os.img", in: server.images)
        let device = try loop(8 << 20)
        let listed = try XCTUnwrap(try listedDisk(device.path), "the loop device is not in /api/devices")
        XCTAssertEqual(listed["kind"] as? String, "disk")
        XCTAssertEqual(listed["sizeBytes"] as? Int, 8 << 20)
        XCTAssertEqual(listed["transport"] as? String, "loop")
        XCTAssertEqual(listed["removable"] as? Bool, true)
        XCTAssertEqual(listed["mounted"] as? Bool, false)
        XCTAssertEqual(listed["system"] as? Bool, false)
        let token = try XCTUnwrap(listed["confirm"] as? String)

        let dashboard = try DashboardSocket(serverURL: server.url)
        let started = try start(["deviceId": device.path, "image": "os.img.xz", "confirm": token])
        XCTAssertEqual(started.status, 200, "\(started.answer)")
        let jobId = try XCTUnwrap(started.answer["jobId"] as? String)
        let end = try XCTUnwrap(dashboard.end(of: device.path), "no end for \(device.path): \(dashboard.messages)")
        XCTAssertEqual(end["type"] as? String, "flash_completed", "\(end)")
        XCTAssertEqual(end["verified"] as? Bool, true)
        XCTAssertEqual(end["target"] as? String, "disk")
        XCTAssertEqual(end["sha256"] as? String, try DiskImages.sha256(server.images + "/os.img"))
        let messages = dashboard.messages(device: device.path)
        XCTAssertEqual(messages.first?["type"] as? String, "flash_started")
        XCTAssertTrue(messages.allSatisfy { $0["jobId"] as? String == jobId && $0["target"] as? String == "disk" })
        let stages = messages.compactMap { $0["type"] as? String == "flash_progress" ? $0.stageName : nil }
        // Progress comes four times a second, so a quick stage may not show; the order always does.
        XCTAssertTrue(Set(stages).isSubset(of: ["Opening", "Writing", "Flushing", "Verifying"]), "\(stages)")
        XCTAssertEqual(stages.last, "Verifying")
        XCTAssertFalse(stages.drop { $0 != "Verifying" }.contains("Writing"), "writing after verifying: \(stages)")
        let percents = messages.compactMap { $0["type"] as? String == "flash_progress" ? $0["progress"] as? Double : nil }
        XCTAssertEqual(percents, percents.sorted(), "progress went backwards")
        XCTAssertEqual(percents.last, 100)
        XCTAssertEqual(try device.contents().prefix(data.count), data)

        let history = try curl(["\(server.url)/api/history"]).events.first?["jobs"] as? [[String: Any]] ?? []
        let row = try XCTUnwrap(history.first { $0["jobId"] as? String == jobId })
        XCTAssertEqual(row["result"] as? String, "completed")
        XCTAssertEqual(row["target"] as? String, "disk")
        XCTAssertEqual(row["verified"] as? Bool, true)
        XCTAssertEqual(row["deviceId"] as? String, device.path)
        let job = try curl(["\(server.url)/api/jobs/\(jobId)"]).events.first
        XCTAssertEqual(job?["verified"] as? Bool, true)
        XCTAssertEqual(job?["target"] as? String, "disk")
    }

    func testDisksThatMayNotBeWrittenAreRefusedWithTheReason() throws {
        _ = try image()
        let device = try loop(8 << 20)
        let other = try loop(8 << 20)
        let token = try XCTUnwrap(try listedDisk(device.path)?["confirm"] as? String)

        let unconfirmed = try start(["deviceId": device.path, "image": "os.img"])
        XCTAssertEqual(unconfirmed.status, 409)
        XCTAssertTrue((unconfirmed.answer["error"] as? String ?? "").contains("\(device.path): loop device on"), "\(unconfirmed.answer)")
        // Another disk's token: the disk in that place is not the one the person saw.
        let stale = try start(["deviceId": other.path, "image": "os.img", "confirm": token])
        XCTAssertEqual(stale.status, 409)
        XCTAssertTrue((stale.answer["error"] as? String ?? "").contains("\(other.path) is not the disk that was confirmed; it is now \(other.path): loop device on"), "\(stale.answer)")

        let small = try loop(2 << 20)
        let smallToken = try XCTUnwrap(try listedDisk(small.path)?["confirm"] as? String)
        let tooSmall = try start(["deviceId": small.path, "image": "os.img", "confirm": smallToken])
        XCTAssertEqual(tooSmall.status, 422)
        XCTAssertTrue((tooSmall.answer["error"] as? String ?? "").contains("larger than \(small.path)"), "\(tooSmall.answer)")

        let mounted = try loop(8 << 20)
        // No lazy initialisation: the kernel writes nothing to it on its own while it is mounted.
        try DiskImages.tool("mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 \(mounted.path) && mkdir -p mnt && mount \(mounted.path) mnt && sync", in: work)
        defer { _ = try? ProcessRunner.run("/bin/umount", [work + "/mnt"]) }
        let mountedBefore = try mounted.contents()
        let mountedToken = try XCTUnwrap(try listedDisk(mounted.path)?["confirm"] as? String)
        XCTAssertEqual(try listedDisk(mounted.path)?["mounted"] as? Bool, true)
        let refused = try start(["deviceId": mounted.path, "image": "os.img", "confirm": mountedToken])
        XCTAssertEqual(refused.status, 422)
        XCTAssertTrue((refused.answer["error"] as? String ?? "").contains("mounted at \(work)/mnt"), "\(refused.answer)")

        // A partition: the whole disk is what gets written.
        let partitioned = try loop(8 << 20)
        try DiskImages.tool("printf 'label: dos\\n,4M\\n' | sfdisk -q \(partitioned.path) 2>/dev/null; partx -a \(partitioned.path) 2>/dev/null; test -b \(partitioned.path)p1", in: work)
        let partition = partitioned.path + "p1"
        let devices = try curl(["\(server.url)/api/devices"]).events.first?["devices"] as? [[String: Any]] ?? []
        XCTAssertFalse(devices.contains { $0["deviceId"] as? String == partition }, "partitions are not offered as disks")
        // Anything but a disk gets one answer, whether or not the path exists.
        for path in ["/etc/passwd", "/dev/null", "/nothing/here", work] {
            let refused = try start(["deviceId": path, "image": "os.img", "confirm": "x"])
            XCTAssertEqual(refused.status, 404, path)
            XCTAssertEqual(refused.answer["error"] as? String, "no disk \(path) on this machine")
        }
        let partitionRefused = try start(["deviceId": partition, "image": "os.img"])
        XCTAssertEqual(partitionRefused.status, 422, "\(partitionRefused.answer)")
        XCTAssertTrue((partitionRefused.answer["error"] as? String ?? "").contains("\(partition) is a partition of \(partitioned.path): write the whole disk"), "\(partitionRefused.answer)")

        XCTAssertEqual(try device.contents(), Data(repeating: 0xAB, count: 8 << 20))
        XCTAssertEqual(try other.contents(), Data(repeating: 0xAB, count: 8 << 20))
        XCTAssertEqual(try small.contents(), Data(repeating: 0xAB, count: 2 << 20))
        XCTAssertEqual(try mounted.contents(), mountedBefore)
        let jobs = try curl(["\(server.url)/api/jobs"]).events.first?["jobs"] as? [[String: Any]] ?? []
        XCTAssertEqual(jobs.count, 0, "a refused request starts no job: \(jobs)")
    }

    func testOneReadFeedsABatchAndADiskThatFailsEndsAlone() throws {
        let (data, path) = try image(24 << 20)
        let first = try loop(32 << 20), second = try loop(32 << 20)
        // Its file fills a 4 MiB tmpfs: writes past that fail as on a dying card.
        let failing = try loop(32 << 20, failingAfter: 4 << 20)
        var tokens: [String: String] = [:]
        for device in [first, failing, second] {
            tokens[device.path] = try XCTUnwrap(try listedDisk(device.path)?["confirm"] as? String)
        }
        let dashboard = try DashboardSocket(serverURL: server.url)
        let readBefore = try bytesRead(by: server.pid)
        let started = try start(["deviceIds": [first.path, failing.path, second.path], "image": "os.img", "confirm": tokens])
        XCTAssertEqual(started.status, 200, "\(started.answer)")
        let batchId = try XCTUnwrap(started.answer["batchId"] as? String)
        let jobs = try XCTUnwrap(started.answer["jobs"] as? [[String: Any]])
        XCTAssertEqual(jobs.compactMap { $0["deviceId"] as? String }, [first.path, failing.path, second.path])
        XCTAssertEqual(Set(jobs.compactMap { $0["jobId"] as? String }).count, 3)

        for device in [first, second] {
            let end = try XCTUnwrap(dashboard.end(of: device.path, timeout: 60))
            XCTAssertEqual(end["type"] as? String, "flash_completed", "\(device.path): \(end)")
            XCTAssertEqual(end["verified"] as? Bool, true)
            XCTAssertEqual(end["batchId"] as? String, batchId)
            XCTAssertEqual(try device.contents().prefix(data.count), data)
        }
        let failed = try XCTUnwrap(dashboard.end(of: failing.path, timeout: 60))
        XCTAssertEqual(failed["type"] as? String, "flash_failed")
        let error = failed["error"] as? String ?? ""
        XCTAssertTrue(error.contains(failing.path) && (error.contains("Input/output error") || error.contains("does not fit") || error.contains("No space")), error)
        XCTAssertNil(failed["reason"], "a failing disk is not a cancel")

        // One read of the image for three disks: the server read it once, and each good disk once
        // more to verify it.
        let read = try bytesRead(by: server.pid) - readBefore
        XCTAssertLessThan(read, 4 * Int64(data.count), "the server read \(read) bytes for a \(data.count)-byte image and two verifications")
        XCTAssertGreaterThanOrEqual(read, 3 * Int64(data.count) - (1 << 20), "the image and two read-backs, \(read) bytes, seem not counted")
        _ = path
    }

    /// The bytes a process has read through read(2) and friends, as the kernel counts them.
    private func bytesRead(by pid: Int32) throws -> Int64 {
        let io = try String(contentsOfFile: "/proc/\(pid)/io", encoding: .utf8)
        let line = io.split(separator: "\n").first { $0.hasPrefix("rchar:") } ?? ""
        return Int64(line.split(separator: " ").last ?? "") ?? 0
    }
}
