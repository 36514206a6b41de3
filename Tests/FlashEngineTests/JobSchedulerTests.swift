@testable import FlashEngine
import Foundation
import Synchronization
import Testing

/// The scheduler against emulated devices over real TCP sockets.
@Suite(.serialized) final class JobSchedulerTests {
    let base = NSTemporaryDirectory() + "flashctl-scheduler-\(UUID().uuidString)"
    var devices: [EmulatedDeviceServer] = []

    deinit {
        devices.forEach { $0.stop() }
        try? FileManager.default.removeItem(atPath: base)
    }

    func device(_ serial: String, speed: Int64 = 0) throws -> EmulatedDeviceServer {
        let directory = base + "/" + serial
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let server = try EmulatedDeviceServer(config: EmulatedDeviceConfig(directory: directory, serial: serial, speedLimit: speed), port: 0)
        try server.start()
        devices.append(server)
        return server
    }

    func scheduler(maxParallel: Int = 8, totalBandwidth: Int64? = nil) -> JobScheduler {
        let devices = self.devices
        let finder = FastbootDeviceFinder(listUSB: { [] }, listNetwork: {
            devices.map { FastbootDeviceInfo(address: .tcp(host: $0.host, port: $0.port), serial: $0.config.serial) }
        })
        return JobScheduler(configuration: .init(maxParallelJobs: maxParallel, totalBandwidth: totalBandwidth, progressRate: ProgressRate(perSecond: 20)), finder: finder)
    }

    func image(_ name: String, bytes: Int) throws -> (path: String, data: Data) {
        let data = try #require(FileHandle(forReadingAtPath: "/dev/urandom")).readData(ofLength: bytes)
        let path = base + "/in/" + name
        try FileManager.default.createDirectory(atPath: base + "/in", withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: path))
        return (path, data)
    }

    func waitFor(_ scheduler: JobScheduler, _ jobId: String, timeout: Double = 30, until done: (JobStatus) -> Bool = { $0.state.isFinished }) async throws -> JobStatus {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let status = scheduler.job(jobId), done(status) { return status }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("\(jobId) did not get there in \(timeout) s: \(String(describing: scheduler.job(jobId)))")
        throw FlashError(.timeout, "timeout")
    }

    func partition(_ serial: String, _ name: String) -> Data? {
        FileManager.default.contents(atPath: base + "/\(serial)/\(name).img") ?? FileManager.default.contents(atPath: base + "/\(serial)/\(name)")
    }

    @Test func jobsForABusyDeviceWaitTheirTurnWhileOtherDevicesRunInParallel() async throws {
        _ = try device("SER1", speed: 8 << 20)
        _ = try device("SER2", speed: 8 << 20)
        let scheduler = scheduler()
        let boot = try image("boot.img", bytes: 2 << 20)
        let system = try image("system.img", bytes: 3 << 20)
        let first = try scheduler.submit(FastbootFlashRequest(imagePath: boot.path, device: .serial("SER1")))
        let second = try scheduler.submit(FastbootFlashRequest(imagePath: system.path, device: .serial("SER1")))
        let third = try scheduler.submit(FastbootFlashRequest(imagePath: boot.path, device: .serial("SER2")))
        #expect(first.state == .running)
        #expect(second.state == .queued)
        #expect(third.state == .running)

        let done = try await waitFor(scheduler, second.info.jobId)
        #expect(done.state == .completed)
        let firstDone = try #require(scheduler.job(first.info.jobId))
        #expect(try #require(done.startedAt) >= #require(firstDone.endedAt))
        #expect(try await waitFor(scheduler, third.info.jobId).state == .completed)
        #expect(partition("SER1", "boot") == boot.data)
        #expect(partition("SER1", "system") == system.data)
        #expect(partition("SER2", "boot") == boot.data)
        #expect(done.xxh128 == (try xxh128sum(system.path)))
    }

    @Test func everyRunningJobsProgressOfATickIsDeliveredTogether() async throws {
        _ = try device("SER1", speed: 4 << 20)
        _ = try device("SER2", speed: 4 << 20)
        let scheduler = scheduler()
        let image = try image("boot.img", bytes: 2 << 20)
        // A reader that takes what is queued the moment it is woken: each take is one delivery.
        let subscription = scheduler.broadcaster.subscribe()
        let deliveries = Mutex<[[FlashEvent]]>([])
        subscription.setReadyHandler {
            let events = subscription.takeQueued().messages.map(\.event)
            if !events.isEmpty { deliveries.withLock { $0.append(events) } }
        }
        let first = try scheduler.submit(FastbootFlashRequest(imagePath: image.path, device: .serial("SER1")))
        let second = try scheduler.submit(FastbootFlashRequest(imagePath: image.path, device: .serial("SER2")))
        #expect(try await waitFor(scheduler, first.info.jobId).state == .completed)
        #expect(try await waitFor(scheduler, second.info.jobId).state == .completed)
        subscription.close()

        var together = 0, alone = 0
        for delivery in deliveries.withLock({ $0 }) {
            let jobs = Set(delivery.compactMap { event -> String? in
                guard case .progress(let job, let snapshot, _) = event, snapshot.progress < 100 else { return nil }
                return job.jobId
            })
            if jobs.count == 2 { together += 1 } else if jobs.count == 1 { alone += 1 }
        }
        // Both jobs run for about half a second at 20 ticks per second; only a tick in which one
        // of them had nothing new (its first or last moments) delivers one job's progress alone.
        #expect(together >= 3, "deliveries with both jobs' progress: \(together), with one: \(alone)")
        #expect(together > alone, "deliveries with both jobs' progress: \(together), with one: \(alone)")
    }

    @Test func theParallelLimitQueuesJobsForIdleDevices() async throws {
        _ = try device("SER1", speed: 16 << 20)
        _ = try device("SER2", speed: 16 << 20)
        let scheduler = scheduler(maxParallel: 1)
        let boot = try image("boot.img", bytes: 1 << 20)
        let first = try scheduler.submit(FastbootFlashRequest(imagePath: boot.path, device: .serial("SER1")))
        let second = try scheduler.submit(FastbootFlashRequest(imagePath: boot.path, device: .serial("SER2")))
        #expect(second.state == .queued)
        #expect(try await waitFor(scheduler, second.info.jobId).state == .completed)
        #expect(scheduler.job(first.info.jobId)?.state == .completed)
    }

    @Test func pauseHoldsTransfersUntilResume() async throws {
        _ = try device("SER1", speed: 4 << 20)
        let scheduler = scheduler()
        let events = EventRecorder(scheduler.broadcaster.subscribe())
        let boot = try image("boot.img", bytes: 12 << 20)
        let job = try scheduler.submit(FastbootFlashRequest(imagePath: boot.path, device: .serial("SER1")))
        let id = job.info.jobId
        _ = try await waitFor(scheduler, id) { $0.bytesTransferred > 1 << 20 }
        try scheduler.pause(id)
        #expect(throws: FlashError.self) { try scheduler.pause(id) }
        // What was in flight lands; then nothing more moves.
        try await Task.sleep(for: .milliseconds(1500))
        let held = try #require(scheduler.job(id))
        try await Task.sleep(for: .milliseconds(1000))
        let later = try #require(scheduler.job(id))
        #expect(later.state == .paused)
        #expect(later.bytesTransferred == held.bytesTransferred)
        #expect(later.bytesTransferred < Int64(boot.data.count))
        try scheduler.resume(id)
        let done = try await waitFor(scheduler, id)
        #expect(done.state == .completed)
        #expect(partition("SER1", "boot") == boot.data)

        let types = await events.types(until: id)
        let paused = try #require(types.firstIndex(of: "flash_paused"))
        let resumed = try #require(types.firstIndex(of: "flash_resumed"))
        #expect(paused < resumed)
        #expect(!types[paused..<resumed].contains("flash_progress"), "no progress is reported while paused")
        #expect(types.last == "flash_completed")
    }

    @Test func cancelStopsPromptlyAndLeavesTheDeviceUsable() async throws {
        _ = try device("SER1", speed: 2 << 20)
        let scheduler = scheduler()
        let events = EventRecorder(scheduler.broadcaster.subscribe())
        let big = try image("boot.img", bytes: 24 << 20)
        let job = try scheduler.submit(FastbootFlashRequest(imagePath: big.path, device: .serial("SER1")))
        _ = try await waitFor(scheduler, job.info.jobId) { $0.bytesTransferred > 0 }
        try scheduler.cancel(job.info.jobId)
        let cancelled = try await waitFor(scheduler, job.info.jobId, timeout: 20)
        #expect(cancelled.state == .cancelled)
        #expect(partition("SER1", "boot") == nil, "a cancelled job never writes the partition")
        let last = await events.all(until: job.info.jobId).last
        guard case .failed(_, let error, let reason, _) = last else {
            Issue.record("the job must end with flash_failed, got \(String(describing: last))")
            return
        }
        #expect(reason == "cancelled")
        #expect(error.contains("cancelled"))
        #expect(throws: FlashError.self) { try scheduler.cancel(job.info.jobId) }

        // The device took the rest of that download as padding and is back in its command phase.
        let small = try image("dtbo.img", bytes: 64 << 10)
        let next = try scheduler.submit(FastbootFlashRequest(imagePath: small.path, device: .serial("SER1")))
        #expect(try await waitFor(scheduler, next.info.jobId).state == .completed)
        #expect(partition("SER1", "dtbo") == small.data)
    }

    @Test func aQueuedJobCancelledEndsAtOnce() async throws {
        _ = try device("SER1", speed: 4 << 20)
        let scheduler = scheduler()
        let boot = try image("boot.img", bytes: 4 << 20)
        let running = try scheduler.submit(FastbootFlashRequest(imagePath: boot.path, device: .serial("SER1")))
        let queued = try scheduler.submit(FastbootFlashRequest(imagePath: boot.path, device: .serial("SER1")))
        let events = EventRecorder(scheduler.broadcaster.subscribe(EventFilter(jobId: queued.info.jobId)))
        // A dashboard that asks for flash_queued is told of the waiting job, also when it joins late.
        let asking = EventRecorder(scheduler.broadcaster.subscribe(EventFilter(include: "flash_queued")))
        #expect(try scheduler.cancel(queued.info.jobId).state == .cancelled)
        #expect(await events.types(until: queued.info.jobId) == ["flash_started", "flash_failed"])
        #expect(await asking.types(until: queued.info.jobId) == ["flash_queued", "flash_started", "flash_failed"])
        #expect(try await waitFor(scheduler, running.info.jobId).state == .completed)
    }

    @Test func aJobBandwidthCapIsRespected() async throws {
        _ = try device("SER1")
        let scheduler = scheduler()
        let boot = try image("boot.img", bytes: 3 << 20)
        let started = Date()
        let job = try scheduler.submit(FastbootFlashRequest(imagePath: boot.path, device: .serial("SER1")), bandwidthLimit: 1 << 20)
        let done = try await waitFor(scheduler, job.info.jobId)
        #expect(done.state == .completed)
        // 3 MiB at 1 MiB/s, less the bucket's quarter-second burst: never sooner than 2.75 s.
        #expect(Date().timeIntervalSince(started) >= 2.7)
        #expect(partition("SER1", "boot") == boot.data)
    }

    /// Files standing in for disks, `size` bytes each.
    func diskFiles(_ names: [String], size: Int = 16 << 20) throws -> [String] {
        try FileManager.default.createDirectory(atPath: base + "/disks", withIntermediateDirectories: true)
        return try names.map { name in
            let path = base + "/disks/" + name
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            let handle = try #require(FileHandle(forWritingAtPath: path))
            try handle.truncate(atOffset: UInt64(size))
            try handle.close()
            return path
        }
    }

    @Test func aDiskBatchStartsTogetherWhenAllItsDisksAreFreeAndFinishesWithOneRead() async throws {
        let scheduler = scheduler(maxParallel: 2)
        let image = try image("os.img", bytes: 6 << 20)
        let (a, b, c) = try { let files = try diskFiles(["a", "b", "c"]); return (files[0], files[1], files[2]) }()
        // Three disks where two jobs may run: a batch larger than the limit runs alone.
        let first = try DiskBatch.prepare(DiskFlashRequest(imagePath: image.path, targets: [a, b, c]))
        let firstStatuses = try scheduler.submit(batch: first.jobs)
        #expect(firstStatuses.map(\.state) == [.running, .running, .running])
        #expect(Set(firstStatuses.compactMap(\.info.batchId)).count == 1)
        // Its disks are busy: the next batch on two of them waits, both of its jobs together.
        let second = try DiskBatch.prepare(DiskFlashRequest(imagePath: image.path, targets: [c, a]))
        let secondStatuses = try scheduler.submit(batch: second.jobs)
        #expect(secondStatuses.map(\.state) == [.queued, .queued])
        for status in firstStatuses + secondStatuses {
            let done = try await waitFor(scheduler, status.info.jobId)
            #expect(done.state == .completed, "\(done)")
            #expect(done.verified == true)
            #expect(done.info.target == .disk)
        }
        let starts = secondStatuses.compactMap { scheduler.job($0.info.jobId)?.startedAt }
        let firstEnds = firstStatuses.compactMap { scheduler.job($0.info.jobId)?.endedAt }
        #expect(starts.count == 2 && Set(starts).count == 1, "the batch's jobs start together")
        #expect(starts.allSatisfy { start in firstEnds.allSatisfy { $0 <= start } })
        for path in [a, b, c] {
            #expect(FileManager.default.contents(atPath: path)?.prefix(image.data.count) == image.data)
        }
    }

    @Test func aBatchMemberCancelledWhileQueuedDoesNotHoldTheOthers() async throws {
        let scheduler = scheduler()
        let image = try image("os.img", bytes: 4 << 20)
        let files = try diskFiles(["a", "b", "c"])
        let blocker = try DiskBatch.prepare(DiskFlashRequest(imagePath: image.path, targets: [files[0]]))
        let running = try scheduler.submit(blocker.jobs[0])
        let batch = try DiskBatch.prepare(DiskFlashRequest(imagePath: image.path, targets: [files[0], files[1], files[2]]))
        let queued = try scheduler.submit(batch: batch.jobs)
        #expect(try scheduler.cancel(queued[1].info.jobId).state == .cancelled)
        #expect(try await waitFor(scheduler, running.info.jobId).state == .completed)
        #expect(try await waitFor(scheduler, queued[0].info.jobId).state == .completed)
        #expect(try await waitFor(scheduler, queued[2].info.jobId).state == .completed)
        #expect(FileManager.default.contents(atPath: files[1])?.prefix(4096) == Data(count: 4096), "the cancelled disk was not written")
        #expect(FileManager.default.contents(atPath: files[2])?.prefix(image.data.count) == image.data)
    }

    @Test func badRequestsAreRefusedBeforeAnythingRuns() throws {
        _ = try device("SER1")
        let scheduler = scheduler()
        let boot = try image("boot.img", bytes: 4096)
        #expect(throws: FlashError.self) { try scheduler.submit(FastbootFlashRequest(imagePath: base + "/missing.img", device: .serial("SER1"))) }
        #expect(throws: FlashError.self) { try scheduler.submit(FastbootFlashRequest(imagePath: boot.path, device: .serial("NOPE"))) }
        #expect(throws: FlashError.self) { try scheduler.pause("job_ffffffff") }
        #expect(scheduler.jobs().isEmpty)
    }
}

/// Collects a subscription's events in the background.
actor EventRecorder {
    private var events: [FlashEvent] = []
    private var task: Task<Void, Never>?

    init(_ subscription: EventSubscription) {
        Task { await self.start(subscription) }
    }

    private func start(_ subscription: EventSubscription) {
        task = Task {
            while let batch = await subscription.nextBatch() {
                self.append(batch)
            }
        }
    }

    private func append(_ batch: [FlashEvent]) { events += batch }

    /// Events of `jobId` up to its terminal one (waiting up to 10 s for it).
    func all(until jobId: String) async -> [FlashEvent] {
        for _ in 0..<1000 {
            let mine = events.filter { $0.job.jobId == jobId }
            if mine.contains(where: \.isTerminal) { return mine }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return events.filter { $0.job.jobId == jobId }
    }

    func types(until jobId: String) async -> [String] {
        await all(until: jobId).map(\.protocolType)
    }
}

/// The digest xxhash's own tool computes, to hold ours against.
func xxh128sum(_ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/xxh128sum")
    process.arguments = [path]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(String(decoding: output, as: UTF8.self).prefix(32))
}
