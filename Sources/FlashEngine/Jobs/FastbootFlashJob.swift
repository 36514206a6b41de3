/// Flashes one image to one partition of one fastboot device: the same job for the CLI, the
/// server and auto-flash. An auto-flash profile's job also erases partitions first and flashes
/// further images after the first (`FastbootFlashRequest.erase`, `.extraImages`), all as one job
/// with one progress over the bytes of every image.
///
/// `prepare` checks everything that can be checked without talking to the device (the image is
/// readable and not corrupt, the selector names exactly one device), so bad input is refused
/// before anything is sent. `run` then reports every step as `FlashEvent`s.
public final class FastbootFlashJob: FlashJob, @unchecked Sendable {
    public let jobId: String
    public let request: FastbootFlashRequest
    public let partition: String
    public let image: FastbootImage
    public let device: FastbootDeviceFinder.Found
    /// The images after the first, with their partitions, in the order they are flashed.
    public let extraImages: [(partition: String, image: FastbootImage)]
    /// Partitions erased before anything is flashed, in this order.
    public let erase: [String]
    public let control = JobControl()
    let finder: FastbootDeviceFinder
    private let clock: FlashClock

    public static func prepare(_ request: FastbootFlashRequest, jobId: String = JobID.make(), finder: FastbootDeviceFinder = FastbootDeviceFinder(), clock: FlashClock = SystemClock()) throws -> FastbootFlashJob {
        let partition = try request.resolvedPartition()
        let image = try FastbootImage.open(path: request.imagePath, bmapPath: request.bmapPath, noBmap: request.noBmap, entry: request.entry)
        let extraImages = try request.resolvedImages().dropFirst().map { (partition: $0.partition, image: try FastbootImage.open(path: $0.imagePath, noBmap: request.noBmap, entry: $0.entry)) }
        let erase = try request.resolvedErasePartitions()
        let device = try finder.find(request.device)
        return FastbootFlashJob(jobId: jobId, request: request, partition: partition, image: image, extraImages: extraImages, erase: erase, device: device, finder: finder, clock: clock)
    }

    private init(jobId: String, request: FastbootFlashRequest, partition: String, image: FastbootImage, extraImages: [(partition: String, image: FastbootImage)], erase: [String],
                 device: FastbootDeviceFinder.Found, finder: FastbootDeviceFinder, clock: FlashClock) {
        self.jobId = jobId
        self.request = request
        self.partition = partition
        self.image = image
        self.extraImages = extraImages
        self.erase = erase
        self.device = device
        self.finder = finder
        self.clock = clock
    }

    /// For a job of several images, `image` is their file names and `partition` their
    /// partitions, each joined with ", " in flashing order.
    public var info: JobInfo {
        let found = device.info
        guard !extraImages.isEmpty else {
            return JobInfo(
                jobId: jobId, deviceId: found.deviceId, deviceName: found.product,
                image: request.imagePath, partition: partition
            )
        }
        let images = [image] + extraImages.map(\.image)
        var names = images.map { $0.entry ?? $0.fileName }.joined(separator: ", ")
        // The files of one zip (a factory image): "image-oriole.zip: boot.img, system.img".
        if images.allSatisfy({ $0.entry != nil && $0.path == image.path }) {
            names = image.fileName + ": " + names
        }
        return JobInfo(
            jobId: jobId, deviceId: found.deviceId, deviceName: found.product,
            image: names, partition: ([partition] + extraImages.map(\.partition)).joined(separator: ", ")
        )
    }

    /// What every image will send together, as far as is known before the device's download
    /// limit is (see `FastbootImage.estimatedBytes`).
    public var expectedBytes: Int64 {
        extraImages.reduce(image.estimatedBytes) { $0 + $1.image.estimatedBytes }
    }

    /// Runs the job to its end on the calling thread. Returns true when the device accepted
    /// everything; every outcome is also reported through `emit`.
    @discardableResult
    public func run(emit: @escaping @Sendable (FlashEvent) -> Void) -> Bool {
        run(progress: makeProgress(clock: clock, emit: emit)).state == .completed
    }

    /// Runs the job to its end on the calling thread, reporting through `progress`, with the
    /// bandwidth caps in `limits` (the job's own and a shared one, for example).
    public func run(progress: ProgressAggregator, limits: [TokenBucket] = []) -> JobOutcome {
        let targets = [(partition: partition, image: image)] + extraImages
        let measuring = targets.contains { $0.image.needsMeasuring }
        progress.start(stage: measuring ? "Reading the image to learn its size" : "Connecting")
        var transport: FastbootTransport?
        var cancelHandler: Int?
        defer {
            cancelHandler.map(control.removeCancelHandler)
            transport?.close()
        }
        let digest = XXH128Digest()
        var sent: Int64 = 0
        var touched = false
        var downloading: ControlledStream?
        do {
            let layouts = try targets.map { try $0.image.layout(checkCancelled: control.checkCancelled) }
            if measuring { progress.setStage("Connecting") }
            var connected = try finder.connect(device, control: control)
            transport = connected
            // A device that stops reading or answering must not hold a cancel back.
            cancelHandler = control.onCancel { [connected] in connected.interrupt() }
            var client = FastbootClient(transport: connected, timeouts: request.timeouts) { progress.deviceMessage($0) }
            try control.checkCancelled()
            if let requirements = request.requirements {
                progress.setStage("Checking the device against android-info.txt")
                try requirements.check(deviceName: device.info.deviceId) { try Self.variable($0, client) }
            }
            let maxDownload = try Self.maxDownloadSize(client)
            if let slot = request.activateSlot {
                progress.setStage("Activating slot \(slot)")
                try client.setActive(slot: slot)
            }
            // Each partition in its slot(s), as AOSP fastboot names them: "boot" is "boot_a".
            let slot = request.slot ?? .current
            var steps: [(partition: String, image: FastbootImage, layout: SparsePlanner.BlockLayout, target: Int)] = []
            for (index, (target, layout)) in zip(targets, layouts).enumerated() {
                for name in try slot.partitions(for: target.partition, client: client) {
                    steps.append((name, target.image, layout, index))
                }
            }
            // Every image is planned before anything is erased or sent: a bad one stops the job first.
            func plan(_ index: Int, maxDownload: Int64) throws -> DownloadPlan {
                let step = steps[index]
                return try step.image.downloads(for: step.layout, maxDownloadBytes: maxDownload, checkCancelled: control.checkCancelled) {
                    progress.setStage("Looking for empty blocks in \(step.image.entry ?? step.image.fileName)")
                }
            }
            var plans = try steps.indices.map { try plan($0, maxDownload: maxDownload) }
            progress.setTotalBytes(plans.reduce(Int64(0)) { $0 + $1.totalLength })

            for name in try erase.flatMap({ try slot.partitions(for: $0, client: client) }) {
                try control.waitWhilePaused()
                progress.setStage("Erasing \(name)")
                touched = true
                try client.erase(partition: name)
                try control.checkCancelled()
            }
            var inUserspace = false
            for index in steps.indices {
                let step = steps[index]
                if let phase = request.userspace, step.target >= phase.firstImage {
                    if !inUserspace {
                        (connected, client) = try enterFastbootd(phase, client: client, transport: connected, progress: progress, cancelHandler: &cancelHandler)
                        transport = connected
                        inUserspace = true
                        touched = true
                        // fastbootd may take downloads of another size: what is left is planned again.
                        let maxDownload = try Self.maxDownloadSize(client)
                        for later in index..<steps.count {
                            plans[later] = try plan(later, maxDownload: maxDownload)
                        }
                        progress.setTotalBytes(sent + plans[index...].reduce(Int64(0)) { $0 + $1.totalLength })
                        try resetLogicalPartitions(steps[index...].map(\.partition), client: client, progress: progress)
                    }
                    try resizeIfLogical(step.partition, to: step.layout.expandedSize, client: client)
                }
                try send(
                    step.image, to: step.partition, step: steps.count > 1 ? "\(index + 1)/\(steps.count)" : nil,
                    downloads: plans[index], client: client, transport: connected,
                    progress: progress, limits: limits, digest: digest, sent: &sent, touched: &touched, downloading: &downloading)
            }
            if request.wipe {
                for name in ["userdata", "cache", "metadata"] where try Self.variable("partition-type:\(name)", client) != nil {
                    try control.waitWhilePaused()
                    progress.setStage("Wiping \(name)")
                    touched = true
                    try client.erase(partition: name)
                }
            }
            if request.reboot {
                progress.setStage("Rebooting")
                try client.reboot()
            }
            let xxh128 = digest.finalizeHex()
            progress.completed(xxh128: xxh128)
            return JobOutcome(state: .completed, error: nil, bytesSent: sent, xxh128: xxh128)
        } catch let error as FlashError where error.kind == .cancelled {
            if downloading != nil { transport?.abandonDownload() }
            progress.stopped(by: control.stopCause)
            return .stopped(by: control.stopCause, bytesSent: sent, targetTouched: touched)
        } catch let error as FlashError {
            progress.failed(error: error.message)
            return JobOutcome(state: .failed, error: error.message, bytesSent: sent, sha256: nil, targetTouched: touched)
        } catch {
            progress.failed(error: "\(error)")
            return JobOutcome(state: .failed, error: "\(error)", bytesSent: sent, sha256: nil, targetTouched: touched)
        }
    }

    /// Sends one image's downloads and flashes each to `partition`; `sent` counts on from the
    /// images before it, so progress runs over the whole job.
    private func send(
        _ image: FastbootImage, to partition: String, step: String?, downloads: DownloadPlan, client: FastbootClient, transport connected: FastbootTransport,
        progress: ProgressAggregator, limits: [TokenBucket], digest: XXH128Digest, sent: inout Int64, touched: inout Bool, downloading: inout ControlledStream?
    ) throws {
        let source = image.openSource()
        defer { source.close() }
        for (index, segments) in downloads.enumerated() {
            // "system 2/3" (a piece of three) in a job of one image; "system (4/7, piece 2/3)" in one of several.
            let piece = downloads.count > 1 ? "\(index + 1)/\(downloads.count)" : nil
            let place = step.map { " (\($0)\(piece.map { ", piece \($0)" } ?? ""))" } ?? piece.map { " \($0)" } ?? ""
            try control.waitWhilePaused()
            progress.setStage("Sending \(partition)\(place)")
            let reader = source.reader(for: segments)
            defer { reader.close() }
            let size = segments.totalLength
            let base = sent
            let stream = ControlledStream(reader.stream, size: size, control: control, buckets: limits, digest: digest, clock: clock, padsOnCancel: connected.padsCancelledDownloads)
            downloading = stream
            try client.download(stream, size: size) { acknowledged in
                stream.acknowledged(acknowledged)
                if !stream.isPadding { progress.update(bytesTransferred: base + acknowledged) }
            }
            downloading = nil
            try control.checkCancelled()
            sent += size
            try control.waitWhilePaused()
            progress.setStage("Writing \(partition)\(place)")
            touched = true
            try client.flash(partition: partition)
        }
    }

    /// A variable of the device; nil when it does not know it (FAIL).
    static func variable(_ name: String, _ client: FastbootClient) throws -> String? {
        do {
            return try client.getvar(name).trimmingWhitespace
        } catch let error as FlashError where error.kind == .deviceFailed {
            return nil
        }
    }

    /// The device's download limit; devices that do not say get no limit, as AOSP fastboot does.
    static func maxDownloadSize(_ client: FastbootClient) throws -> Int64 {
        let answer: String
        do {
            answer = try client.getvar("max-download-size")
        } catch let error as FlashError where error.kind == .deviceFailed {
            return Int64(UInt32.max)
        }
        let text = answer.trimmingWhitespace.lowercased()
        let value = text.hasPrefix("0x") ? Int64(text.dropFirst(2), radix: 16) : Int64(text)
        guard let value, value > 0 else {
            throw FlashError(.protocolViolation, "\(client.transport.peerDescription) reported an unreadable max-download-size: '\(answer)'")
        }
        return min(value, Int64(UInt32.max))
    }
}

/// Job ids as the protocol shows them: `job_` and 8 hex digits.
public enum JobID {
    public static func make() -> String {
        let value = UInt32.random(in: 0...UInt32.max)
        return "job_" + hex8(value)
    }
}
