@testable import FlashEngine
import Foundation
import Testing

/// One job that erases, flashes several images and reboots (an auto-flash profile's job), against
/// an emulated device over real TCP.
@Suite(.serialized) final class MultiStepJobTests {
    let base = NSTemporaryDirectory() + "flashctl-multistep-\(UUID().uuidString)"
    var server: EmulatedDeviceServer?

    deinit {
        server?.stop()
        try? FileManager.default.removeItem(atPath: base)
    }

    private func device(maxDownload: Int64) throws -> FastbootDeviceFinder {
        try FileManager.default.createDirectory(atPath: base + "/MULTI", withIntermediateDirectories: true)
        let server = try EmulatedDeviceServer(config: EmulatedDeviceConfig(directory: base + "/MULTI", serial: "MULTI", maxDownloadSize: maxDownload, speedLimit: 16 << 20), port: 0)
        try server.start()
        self.server = server
        let finder = FastbootDeviceFinder(listUSB: { [] }, listNetwork: {
            [FastbootDeviceInfo(address: .tcp(host: server.host, port: server.port), serial: "MULTI")]
        })
        return finder
    }

    private func image(_ name: String, bytes: Int) throws -> (path: String, data: Data) {
        let data = try #require(FileHandle(forReadingAtPath: "/dev/urandom")).readData(ofLength: bytes)
        try FileManager.default.createDirectory(atPath: base + "/in", withIntermediateDirectories: true)
        let path = base + "/in/" + name
        try data.write(to: URL(fileURLWithPath: path))
        return (path, data)
    }

    @Test func erasesThenFlashesEveryImageInOrderAsOneJob() throws {
        let finder = try device(maxDownload: 1 << 20)
        try Data(repeating: 0xAB, count: 64 << 10).write(to: URL(fileURLWithPath: base + "/MULTI/userdata.img"))
        let boot = try image("boot.img", bytes: 600 << 10)
        let system = try image("system.img", bytes: (2 << 20) + 12288)
        let request = FastbootFlashRequest(
            imagePath: boot.path, partition: "boot", device: .serial("MULTI"), reboot: true,
            erase: ["userdata"], extraImages: [.init(imagePath: system.path, partition: "system")])
        let job = try FastbootFlashJob.prepare(request, finder: finder)
        #expect(job.info.image == "boot.img, system.img")
        #expect(job.info.partition == "boot, system")

        // Every stage change is an event when the interval is 0.
        let events = Collected()
        let progress = ProgressAggregator(job: job.info, totalBytes: job.expectedBytes, rate: .unlimited) { events.append($0) }
        let outcome = job.run(progress: progress)
        #expect(outcome.state == .completed, "\(outcome.error ?? "")")

        #expect(FileManager.default.contents(atPath: base + "/MULTI/userdata.img") == Data(), "the erased partition is empty")
        #expect(FileManager.default.contents(atPath: base + "/MULTI/boot.img") == boot.data)
        #expect(FileManager.default.contents(atPath: base + "/MULTI/system.img") == system.data, "system arrives whole from its sparse pieces")

        let all = events.all
        #expect(all.filter { $0.protocolType == "flash_started" }.count == 1)
        #expect(all.filter(\.isTerminal).map(\.protocolType) == ["flash_completed"])
        let snapshots = all.compactMap { event -> ProgressSnapshot? in
            if case .progress(_, let snapshot, _) = event, snapshot.stage != "Connecting" { return snapshot }
            return nil
        }
        var stages: [String] = []
        for snapshot in snapshots {
            let stage = snapshot.stage.replacingOccurrences(of: ProgressAggregator.estimatingSuffix, with: "")
            if stages.last != stage { stages.append(stage) }
        }
        #expect(stages == [
            // system.img does not fit in one download: it is read for empty blocks first.
            "Looking for empty blocks in system.img",
            "Erasing userdata", "Sending boot (1/2)", "Writing boot (1/2)",
            "Sending system (2/2, piece 1/3)", "Writing system (2/2, piece 1/3)", "Sending system (2/2, piece 2/3)", "Writing system (2/2, piece 2/3)",
            "Sending system (2/2, piece 3/3)", "Writing system (2/2, piece 3/3)", "Rebooting",
        ])
        #expect(snapshots.map(\.progress) == snapshots.map(\.progress).sorted(), "progress never goes back between images")
        #expect(snapshots.last?.progress == 100)
        let transfer = snapshots.filter { !$0.stage.hasPrefix("Looking for empty blocks") }
        #expect(Set(transfer.map(\.totalBytes)).count == 1, "one total over every image, known from the start of the transfer")
        #expect(outcome.bytesSent == snapshots.last?.totalBytes)
        #expect(outcome.bytesSent > Int64(boot.data.count + system.data.count), "system went as sparse pieces, with their headers")
    }

    @Test func aCompressedImageInTheJobIsDecompressedAsItIsSent() throws {
        let finder = try device(maxDownload: 1 << 20)
        let boot = try image("boot.img", bytes: 300 << 10)
        let system = try image("system.img", bytes: (2 << 20) + 4096)
        let zstd = Process()
        zstd.executableURL = URL(fileURLWithPath: "/usr/bin/zstd")
        zstd.arguments = ["-q", "-1", "--rm", system.path]
        try zstd.run()
        zstd.waitUntilExit()
        #expect(zstd.terminationStatus == 0)
        let request = FastbootFlashRequest(
            imagePath: boot.path, partition: "boot", device: .serial("MULTI"),
            extraImages: [.init(imagePath: system.path + ".zst", partition: "system")])
        let outcome = try FastbootFlashJob.prepare(request, finder: finder).run { _ in }
        #expect(outcome)
        #expect(FileManager.default.contents(atPath: base + "/MULTI/boot.img") == boot.data)
        #expect(FileManager.default.contents(atPath: base + "/MULTI/system.img") == system.data, "system.img.zst arrives decompressed, in sparse pieces")
    }

    /// An image rewritten while it is sent would leave the device a mix of old and new bytes: the
    /// job fails and says so, and records no digest.
    @Test func anImageRewrittenWhileItIsSentFailsTheJob() throws {
        let finder = try device(maxDownload: 64 << 20)
        let boot = try image("boot.img", bytes: 6 << 20)
        let request = FastbootFlashRequest(imagePath: boot.path, device: .serial("MULTI"))
        let job = try FastbootFlashJob.prepare(request, finder: finder)
        let rewritten = Collected()
        let progress = ProgressAggregator(job: job.info, totalBytes: job.expectedBytes, rate: .unlimited) { event in
            guard case .progress(_, let snapshot, _) = event, snapshot.progress > 10, rewritten.all.isEmpty else { return }
            rewritten.append(event)
            // Same size, new bytes: only the modification time tells.
            let handle = FileHandle(forWritingAtPath: boot.path)!
            handle.write(Data(repeating: 0x5A, count: 4096))
            try? handle.close()
        }
        let outcome = job.run(progress: progress)
        #expect(!rewritten.all.isEmpty, "the image was rewritten during the send")
        #expect(outcome.state == .failed)
        #expect(outcome.error == "image \(boot.path) changed while it was being sent: the device may have a mix of old and new bytes; flash it again")
        #expect(outcome.xxh128 == nil)
    }

    /// Runs a job of `boot.img` in pieces of under 1 MiB, calling `between` once as the second
    /// piece starts.
    private func flashInPieces(_ boot: (path: String, data: Data), between: @escaping @Sendable () -> Void) throws -> (JobOutcome, started: Bool) {
        let finder = try device(maxDownload: 1 << 20)
        let job = try FastbootFlashJob.prepare(FastbootFlashRequest(imagePath: boot.path, device: .serial("MULTI")), finder: finder)
        let secondPiece = Collected()
        let progress = ProgressAggregator(job: job.info, totalBytes: job.expectedBytes, rate: .unlimited) { event in
            guard case .progress(_, let snapshot, _) = event, snapshot.stage.hasPrefix("Sending boot 2/"), secondPiece.all.isEmpty else { return }
            secondPiece.append(event)
            between()
        }
        let outcome = job.run(progress: progress)
        return (outcome, !secondPiece.all.isEmpty)
    }

    @Test func anImageReplacedBetweenPiecesIsSentAsItWasWhenTheJobStarted() throws {
        let boot = try image("boot.img", bytes: 3 << 20)
        let replacement = try image("replacement.img", bytes: 3 << 20)
        let (outcome, started) = try flashInPieces(boot) { _ = rename(replacement.path, boot.path) }
        #expect(started, "the image was replaced during the job")
        #expect(outcome.state == .completed, "\(outcome.error ?? "")")
        #expect(FileManager.default.contents(atPath: base + "/MULTI/boot.img") == boot.data, "every piece comes from the file the job opened")
    }

    @Test func anImageRewrittenBetweenPiecesFailsTheJob() throws {
        let boot = try image("boot.img", bytes: 3 << 20)
        let (outcome, started) = try flashInPieces(boot) {
            let handle = FileHandle(forWritingAtPath: boot.path)!
            handle.seek(toFileOffset: 2 << 20)
            handle.write(Data(repeating: 0x5A, count: 4096))
            try? handle.close()
        }
        #expect(started, "the image was rewritten during the job")
        #expect(outcome.state == .failed)
        #expect(outcome.error == "image \(boot.path) changed while it was being sent: the device may have a mix of old and new bytes; flash it again")
    }

    /// A job waiting in the queue was planned from the file as it was then (its size, its pieces):
    /// a file put in its place before the job starts is refused, and nothing of it is sent.
    @Test func anImageReplacedWhileTheJobWaitedIsNotSent() throws {
        let finder = try device(maxDownload: 1 << 20)
        let boot = try image("boot.img", bytes: 3 << 20)
        let job = try FastbootFlashJob.prepare(FastbootFlashRequest(imagePath: boot.path, device: .serial("MULTI")), finder: finder)
        let replacement = try image("replacement.img", bytes: 2 << 20)
        #expect(rename(replacement.path, boot.path) == 0)
        let outcome = job.run(progress: ProgressAggregator(job: job.info, totalBytes: job.expectedBytes) { _ in })
        #expect(outcome.state == .failed)
        #expect(outcome.error == "image \(boot.path) changed after the job checked it (it was replaced or rewritten): start the job again to flash the new file")
        #expect(!FileManager.default.fileExists(atPath: base + "/MULTI/boot.img"), "nothing was flashed")
        #expect(outcome.xxh128 == nil)
    }

    /// The later images of a job are checked when the job is made too: one rewritten before its
    /// turn fails the job there, after the images before it were flashed.
    @Test func aLaterImageRewrittenBeforeItsTurnFailsTheJobThere() throws {
        let finder = try device(maxDownload: 1 << 20)
        let boot = try image("boot.img", bytes: 300 << 10)
        let vendor = try image("vendor.img", bytes: 200 << 10)
        let request = FastbootFlashRequest(imagePath: boot.path, device: .serial("MULTI"), extraImages: [.init(imagePath: vendor.path)])
        let job = try FastbootFlashJob.prepare(request, finder: finder)
        let handle = try #require(FileHandle(forWritingAtPath: vendor.path))
        handle.write(Data(repeating: 0x5A, count: 4096))
        try handle.close()
        // The same size: only the modification time tells. The kernel's clock moves in ticks of
        // a few ms, so a rewrite within the tick of the check would keep it; set a distinct one.
        var times = [timeval(tv_sec: 1_000_000_000, tv_usec: 0), timeval(tv_sec: 1_000_000_000, tv_usec: 0)]
        #expect(utimes(vendor.path, &times) == 0)
        let outcome = job.run(progress: ProgressAggregator(job: job.info, totalBytes: job.expectedBytes) { _ in })
        #expect(outcome.state == .failed)
        #expect(outcome.error == "image \(vendor.path) changed after the job checked it (it was replaced or rewritten): start the job again to flash the new file")
        #expect(FileManager.default.contents(atPath: base + "/MULTI/boot.img") == boot.data)
        #expect(!FileManager.default.fileExists(atPath: base + "/MULTI/vendor.img"))
    }

    @Test func theDigestCoversEveryImageSent() throws {
        let finder = try device(maxDownload: 64 << 20)
        let boot = try image("boot.img", bytes: 300 << 10)
        let vendor = try image("vendor.img", bytes: 200 << 10)
        let request = FastbootFlashRequest(imagePath: boot.path, device: .serial("MULTI"), extraImages: [.init(imagePath: vendor.path)])
        let job = try FastbootFlashJob.prepare(request, finder: finder)
        let outcome = job.run(progress: ProgressAggregator(job: job.info, totalBytes: job.expectedBytes) { _ in })
        #expect(outcome.state == .completed, "\(outcome.error ?? "")")
        #expect(FileManager.default.contents(atPath: base + "/MULTI/vendor.img") == vendor.data, "the partition comes from the file name")
        let both = try image("both", bytes: 0).path
        try (boot.data + vendor.data).write(to: URL(fileURLWithPath: both))
        #expect(outcome.xxh128 == (try xxh128sum(both)))
        #expect(outcome.bytesSent == Int64(boot.data.count + vendor.data.count))
    }

    @Test func aMissingSecondImageIsRefusedBeforeTheDeviceIsTouched() throws {
        let scheduler = JobScheduler(finder: try device(maxDownload: 1 << 20))
        let boot = try image("boot.img", bytes: 4096)
        let request = FastbootFlashRequest(imagePath: boot.path, device: .serial("MULTI"), erase: ["userdata"], extraImages: [.init(imagePath: base + "/in/missing.img")])
        #expect(throws: FlashError.self) { try scheduler.submit(request) }
        #expect(scheduler.jobs().isEmpty)
        let bad = FastbootFlashRequest(imagePath: boot.path, device: .serial("MULTI"), erase: ["../etc"])
        #expect(throws: FlashError.self) { try scheduler.submit(bad) }
    }
}

/// Events as a job emitted them, from its thread.
private final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [FlashEvent] = []

    func append(_ event: FlashEvent) {
        lock.lock(); events.append(event); lock.unlock()
    }

    var all: [FlashEvent] {
        lock.lock(); defer { lock.unlock() }
        return events
    }
}
