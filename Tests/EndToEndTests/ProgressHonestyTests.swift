import Foundation
import XCTest

/// What a person watching a dashboard sees of a job on a device that runs at a steady pace: an
/// ETA that is right from early on and across a pause, a bar that follows the device, a cancel
/// that shows at once, and no more progress messages than the protocol allows.
final class ProgressHonestyTests: XCTestCase {
    private var servers: [ServeProcess] = []

    override func tearDown() {
        servers.forEach { $0.removeFiles() }
        servers = []
    }

    private func serve(_ arguments: [String]) throws -> ServeProcess {
        let server = try ServeProcess(arguments: arguments)
        servers.append(server)
        return server
    }

    @discardableResult
    private func post(_ url: String, _ body: String? = nil) throws -> CommandResult {
        try ProcessRunner.run("/usr/bin/curl", ["-sS", "-X", "POST"] + (body.map { ["-d", $0] } ?? []) + [url], timeout: 30)
    }

    private func startJob(_ server: ServeProcess, device: String) throws -> String {
        let start = try post("\(server.url)/api/flash/start", #"{"deviceId":"\#(device)","image":"boot.img"}"#)
        return try XCTUnwrap(start.events.first?["jobId"] as? String, start.stdout)
    }

    func testAtASteadyPaceTheETAIsRightAndTheBarFollowsTheDeviceAcrossAPause() throws {
        let server = try serve(["--emulate", "1", "--emulate-speed", "2M"])
        let size = 16 << 20
        try server.write(image: "boot.img", TestImages.random(size))
        let dashboard = try DashboardSocket(serverURL: server.url)
        let device = DeviceBytesWatcher(directory: server.base + "/tmp")
        defer { device.stop() }
        let jobId = try startJob(server, device: "EMU1")

        // Pause at 40% for 2 s, then resume.
        XCTAssertTrue(dashboard.waitFor { messages in
            messages.contains { $0["type"] as? String == "flash_progress" && ($0["progress"] as? Double ?? 0) >= 40 }
        })
        try post("\(server.url)/api/jobs/\(jobId)/pause")
        Thread.sleep(forTimeInterval: 2)
        try post("\(server.url)/api/jobs/\(jobId)/resume")
        let end = try XCTUnwrap(dashboard.end(of: "EMU1", timeout: 60))
        XCTAssertEqual(end["type"] as? String, "flash_completed", "\(end)")
        device.stop()

        let messages = dashboard.messages(device: "EMU1")
        let timestamp = { (message: [String: Any]) in Int64(message["timestamp"] as? Int ?? 0) }
        let endedAt = timestamp(end)
        let pausedAt = try XCTUnwrap(messages.first { $0["type"] as? String == "flash_paused" }.map(timestamp))
        let resumedAt = try XCTUnwrap(messages.first { $0["type"] as? String == "flash_resumed" }.map(timestamp))
        let progress = messages.filter { $0["type"] as? String == "flash_progress" }
        let running = progress.dropLast()   // the final 100% says 0 s left
        XCTAssertGreaterThan(running.count, 15)

        // The ETA at every message after the first 10% of the bytes is within 10% (plus 0.5 s)
        // of the time the job really ran after it. A pause cannot be foreseen: its time is left
        // out, less the time the device went on taking what was in flight when it began.
        let speed = 2.0 * 1_048_576
        let takenWhilePaused = Double((device.bytes(atOrAfter: resumedAt) ?? 0) - (device.bytes(atOrAfter: pausedAt) ?? 0))
        let pauseLength = Double(resumedAt - pausedAt) - takenWhilePaused / speed * 1000
        var checked = 0
        for message in running {
            let bytes = message["bytesTransferred"] as? Int ?? 0
            guard bytes * 10 >= size else { continue }
            let at = timestamp(message)
            let pause = at < pausedAt ? Int64(pauseLength) : 0
            let realLeft = Double(endedAt - at - pause) / 1000
            let eta = Double(message["estimatedTimeRemaining"] as? Int ?? -1)
            XCTAssertLessThanOrEqual(abs(eta - realLeft), 0.1 * realLeft + 0.5,
                                     "at \(bytes) bytes (\(at < pausedAt ? "before" : "after") the pause): ETA \(eta) s, really \(realLeft) s left")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 12)
        // While the ETA is not known it is 0, and the stage says so.
        let early = running.filter { ($0["bytesTransferred"] as? Int ?? 0) * 10 < size && ($0["bytesTransferred"] as? Int ?? 0) > 0 }
        for message in early where message["estimatedTimeRemaining"] as? Int == 0 {
            XCTAssertTrue((message["stage"] as? String ?? "").hasSuffix("(estimating time left)"), "\(message)")
        }

        // The bar never runs ahead of the device by more than one transfer (a 256 KiB TCP write),
        // before the pause, across it, or after it.
        for message in running {
            let bytes = Int64(message["bytesTransferred"] as? Int ?? 0)
            guard bytes > 0, let onDevice = device.bytes(atOrAfter: timestamp(message)) else { continue }
            XCTAssertLessThanOrEqual(bytes - onDevice, 256 << 10, "at \(timestamp(message)): shown \(bytes), on the device \(onDevice)")
        }

        // At most 4 progress messages in any sliding 1,000 ms, the final 100% included.
        let times = progress.map(timestamp)
        for (index, time) in times.enumerated() {
            XCTAssertLessThanOrEqual(times[index...].prefix { $0 <= time + 1_000 }.count, 4, "from \(time): \(times)")
        }
    }

    func testACancelShowsWithinHalfASecondWhileSendingPausedOrQueued() throws {
        let server = try serve(["--emulate", "1", "--emulate-speed", "2M"])
        try server.write(image: "boot.img", TestImages.random(8 << 20))
        let dashboard = try DashboardSocket(serverURL: server.url)

        let sending = try startJob(server, device: "EMU1")
        let queued = try startJob(server, device: "EMU1")
        XCTAssertTrue(dashboard.waitFor { messages in
            messages.contains { $0["jobId"] as? String == sending && ($0["bytesTransferred"] as? Int ?? 0) > 1 << 20 }
        })
        try cancel(queued, on: server, dashboard: dashboard, state: "queued")
        try cancel(sending, on: server, dashboard: dashboard, state: "sending")

        let paused = try startJob(server, device: "EMU1")
        XCTAssertTrue(dashboard.waitFor { messages in
            messages.contains { $0["jobId"] as? String == paused && ($0["bytesTransferred"] as? Int ?? 0) > 1 << 20 }
        })
        try post("\(server.url)/api/jobs/\(paused)/pause")
        XCTAssertTrue(dashboard.waitFor { $0.contains { $0["jobId"] as? String == paused && $0["type"] as? String == "flash_paused" } })
        Thread.sleep(forTimeInterval: 1)
        try cancel(paused, on: server, dashboard: dashboard, state: "paused")
    }

    /// Cancels `jobId` through the API and checks the dashboard is told within 0.5 s.
    private func cancel(_ jobId: String, on server: ServeProcess, dashboard: DashboardSocket, state: String) throws {
        let asked = Int64(Date().timeIntervalSince1970 * 1000)
        let answer = try post("\(server.url)/api/jobs/\(jobId)/cancel")
        XCTAssertEqual(answer.status, 0, answer.stderr)
        XCTAssertTrue(dashboard.waitFor(timeout: 10) { $0.contains { $0["jobId"] as? String == jobId && $0["type"] as? String == "flash_failed" } })
        let failed = try XCTUnwrap(dashboard.messages.first { $0["jobId"] as? String == jobId && $0["type"] as? String == "flash_failed" })
        XCTAssertEqual(failed["reason"] as? String, "cancelled")
        let shownAfter = Int64(failed["timestamp"] as? Int ?? 0) - asked
        XCTAssertLessThanOrEqual(shownAfter, 500, "a cancel while \(state) showed after \(shownAfter) ms")
    }
}

/// The bytes an emulated device has received of its current download, sampled every 2 ms from
/// its download file, with the time of each sample.
private final class DeviceBytesWatcher: @unchecked Sendable {
    private let lock = NSLock()
    private var samples: [(millis: Int64, bytes: Int64)] = []
    private var stopped = false
    private var thread: Thread?

    init(directory: String) {
        let thread = Thread { [weak self] in
            while let self, !self.isStopped {
                let size = Self.downloadSize(under: directory)
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                self.lock.lock(); self.samples.append((now, size)); self.lock.unlock()
                usleep(2_000)
            }
        }
        self.thread = thread
        thread.start()
    }

    private var isStopped: Bool {
        lock.lock(); defer { lock.unlock() }
        return stopped
    }

    func stop() {
        lock.lock(); stopped = true; lock.unlock()
    }

    /// The first sample taken at or after `millis`.
    func bytes(atOrAfter millis: Int64) -> Int64? {
        lock.lock(); defer { lock.unlock() }
        return samples.first { $0.millis >= millis }?.bytes
    }

    private static func downloadSize(under directory: String) -> Int64 {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return 0 }
        var size: Int64 = 0
        for case let path as String in walker where (path as NSString).lastPathComponent.hasPrefix(".download-") {
            var info = stat()
            if stat(directory + "/" + path, &info) == 0 { size = max(size, Int64(info.st_size)) }
        }
        return size
    }
}
