import Foundation
import Synchronization

/// One image written to one or more disks: one `DiskFlashJob` per disk, all fed by one read (and
/// one decompression) of the image.
///
/// Each disk's job runs on a thread of its own (the scheduler's, or `runAll`'s) and writes what
/// the batch's reader hands it; the reader starts once every job of the batch has started or
/// been cancelled, and gives each piece to every disk still going, a few pieces ahead (bounded),
/// so reading, decompressing and writing overlap. A disk that fails or is cancelled ends alone
/// with its own `flash_failed` while the others finish. The reader keeps the pace of the slowest
/// disk, so a paused disk holds the batch.
public final class DiskBatch: @unchecked Sendable {
    public let request: DiskFlashRequest
    public let image: DiskImage
    /// One job per target, in the order the targets were named.
    public let jobs: [DiskFlashJob]
    /// Shared by the jobs of a batch of several disks; nil for one disk.
    public let batchId: String?

    /// Checks the image, its block map and every target before anything is written: a refusal
    /// here leaves every disk untouched.
    public static func prepare(_ request: DiskFlashRequest, discovery: DiskDiscovery = DiskDiscovery()) throws -> DiskBatch {
        guard !request.targets.isEmpty else { throw FlashError(.deviceSelection, "no target disk given") }
        let image = try DiskImage.open(path: request.imagePath, bmapPath: request.bmapPath, noBmap: request.noBmap, entry: request.entry, checksRanges: request.verify)
        var resolved: [DiskTarget] = []
        var problems: [String] = []
        for path in request.targets {
            let target: DiskTarget
            if request.confirmations != nil {
                // A face that confirms disks (the API) takes block devices only, with one answer
                // for anything else, so it tells nothing of which other paths exist.
                guard let found = try? DiskTarget.resolve(path, discovery: discovery), found.disk != nil else {
                    throw FlashError(.deviceSelection, "no disk \(path) on this machine")
                }
                target = found
            } else {
                target = try DiskTarget.resolve(path, discovery: discovery)
            }
            if resolved.contains(where: { $0.path == target.path }) {
                throw FlashError(.deviceSelection, "\(target.path) is named twice")
            }
            if isSameFile(target.path, request.imagePath) {
                throw FlashError(.unsafeTarget, "\(target.path) is the image itself")
            }
            if let hard = target.hardRefusal { problems.append(hard) }
            if !request.force { problems += target.refusals(imageSize: image.imageSize) }
            resolved.append(target)
        }
        if !problems.isEmpty {
            // Only the CLI has --force; the API and auto-flash have none.
            let overridable = request.offersForce && resolved.allSatisfy { $0.hardRefusal == nil && !$0.forceIsNoAnswer }
            throw FlashError(.unsafeTarget, problems.joined(separator: "; ") + (overridable ? ". Nothing was written. --force writes anyway." : ". Nothing was written."))
        }
        // After the refusals: a disk that may not be written at all says why, whatever its token.
        if let confirmations = request.confirmations {
            for (path, target) in zip(request.targets, resolved) {
                try target.checkConfirmed(confirmations[path] ?? confirmations[target.path])
            }
        }
        return DiskBatch(request: request, image: image, targets: resolved)
    }

    private init(request: DiskFlashRequest, image: DiskImage, targets: [DiskTarget]) {
        self.request = request
        self.image = image
        let batchId = targets.count > 1 ? "batch_" + String(JobID.make().dropFirst(4)) : nil
        self.batchId = batchId
        let controls = targets.map { _ in JobControl() }
        let reader = DiskBatchReader(image: image, controls: controls, hashesStream: request.verify)
        jobs = zip(targets, controls).enumerated().map { index, pair in
            DiskFlashJob(target: pair.0, control: pair.1, member: index, reader: reader, request: request, batchId: batchId)
        }
    }

    /// Runs every job of the batch, each on a thread of its own, and returns their outcomes in
    /// the order of `jobs`: for a face that runs the batch itself (the CLI).
    public func runAll(progress: (DiskFlashJob) -> ProgressAggregator) -> [JobOutcome] {
        let outcomes = Mutex([JobOutcome?](repeating: nil, count: jobs.count))
        let threads = jobs.enumerated().compactMap { index, job -> WorkerThread? in
            let reporter = progress(job)
            do {
                return try WorkerThread.start(name: job.jobId) {
                    let outcome = job.run(progress: reporter, limits: [])
                    outcomes.withLock { $0[index] = outcome }
                }
            } catch {
                // The others must not wait for it to open its disk.
                job.control.cancel()
                reporter.failed(error: "\(error)")
                outcomes.withLock { $0[index] = JobOutcome(state: .failed, error: "\(error)", bytesSent: 0) }
                return nil
            }
        }
        threads.forEach { $0.join() }
        return outcomes.withLock { $0.map { $0 ?? JobOutcome(state: .failed, error: "not run", bytesSent: 0) } }
    }

    static func isSameFile(_ a: String, _ b: String) -> Bool {
        var x = stat(), y = stat()
        guard stat(a, &x) == 0, stat(b, &y) == 0 else { return false }
        return x.st_dev == y.st_dev && x.st_ino == y.st_ino
    }
}

/// The one read of a batch's image: starts once every member has started or been cancelled, and
/// hands each piece to every member still going, and to the batch's `StreamHasher` when the
/// batch is verified.
final class DiskBatchReader: @unchecked Sendable {
    /// Pieces of 2 MiB, 4 in flight plus 2 per disk: enough to keep reading, hashing and writing
    /// overlapped, and 12 MiB of buffers for one disk, so flashing stays under 50 MiB resident.
    static let pieceSize = 2 << 20
    static let piecesInFlight = 4

    private let image: DiskImage
    private let controls: [JobControl]
    private let hasher: StreamHasher?
    /// The image's bytes to write, when known beforehand.
    var totalBytes: Int64? { image.totalBytes }
    /// The members that have arrived, by index, and whether reading has started.
    private let gate = Mutex((arrived: [Int: DiskTargetWriter](), started: false))

    init(image: DiskImage, controls: [JobControl], hashesStream: Bool) {
        self.image = image
        self.controls = controls
        hasher = hashesStream ? StreamHasher() : nil
        for control in controls {
            // A member cancelled before it started never arrives: the others must not wait for it.
            _ = control.onCancel { [weak self] in self?.startIfAllArrived() }
        }
    }

    /// The SHA-256 of the whole image as written, once the member has been given `.end` (waiting
    /// for the hasher to catch up); nil when the batch is not verified.
    func writtenSHA256() -> String? {
        hasher?.sha256()
    }

    /// Called by each member on its own thread once its disk is open.
    func arrive(_ writer: DiskTargetWriter, member: Int) {
        gate.withLock { $0.arrived[member] = writer }
        startIfAllArrived()
    }

    private func startIfAllArrived() {
        let writers = gate.withLock { gate -> [DiskTargetWriter]? in
            let waiting = controls.indices.filter { gate.arrived[$0] == nil && !controls[$0].isCancelled }
            guard waiting.isEmpty, !gate.started else { return nil }
            gate.started = true
            return controls.indices.compactMap { gate.arrived[$0] }
        }
        guard let writers, !writers.isEmpty else { return }
        do {
            try WorkerThread.start(name: "image reader") { [self] in feed(writers) }
        } catch {
            let failure = error as? FlashError ?? FlashError(.io, "\(error)")
            writers.forEach { $0.queue.put(.abort(failure)); $0.queue.close() }
        }
    }

    private func feed(_ writers: [DiskTargetWriter]) {
        let pool = BufferPool(count: Self.piecesInFlight + writers.count * 2, bufferSize: Self.pieceSize)
        do {
            try hasher?.start()
            let reader = try image.makeReader()
            while true {
                let alive = writers.filter { $0.isAlive }
                if alive.isEmpty { break }
                guard let buffer = pool.take() else { break }
                guard let piece = try reader.next(into: buffer) else {
                    pool.give(buffer)
                    break
                }
                let holders = alive.count + (hasher == nil ? 0 : 1)
                let shared = SharedPiece(offset: piece.offset, count: piece.count, inputFraction: reader.inputFraction, buffer: buffer, pool: pool, holders: holders)
                alive.forEach { $0.queue.put(.piece(shared)) }
                hasher?.add(shared)
            }
            // The digest first: a disk that is done must not wait for a paused one to take its end.
            hasher?.finish()
            writers.forEach { $0.queue.put(.end) }
        } catch let error as FlashError {
            hasher?.abandon()
            writers.forEach { $0.queue.put(.abort(error)) }
        } catch {
            hasher?.abandon()
            writers.forEach { $0.queue.put(.abort(FlashError(.io, "\(error)"))) }
        }
        writers.forEach { $0.queue.close() }
    }
}

/// Writes one image to one disk: a member of a `DiskBatch` (a batch of one for a single disk).
public final class DiskFlashJob: FlashJob, @unchecked Sendable {
    public let jobId: String
    public let target: DiskTarget
    public let control: JobControl
    private let member: Int
    private let reader: DiskBatchReader
    private let request: DiskFlashRequest
    private let batchId: String?

    fileprivate init(target: DiskTarget, control: JobControl, member: Int, reader: DiskBatchReader, request: DiskFlashRequest, batchId: String?) {
        jobId = JobID.make()
        self.target = target
        self.control = control
        self.member = member
        self.reader = reader
        self.request = request
        self.batchId = batchId
    }

    public var info: JobInfo {
        var info = JobInfo(jobId: jobId, deviceId: target.path, deviceName: target.disk?.description, image: request.imagePath,
                           target: .disk, batchId: batchId)
        info.medium = target.disk?.medium
        return info
    }

    /// The image's bytes to write (mapped bytes with a block map), 0 when unknown beforehand.
    public var expectedBytes: Int64 { reader.totalBytes ?? 0 }

    public var passes: Int { request.verify ? 2 : 1 }

    public func run(progress: ProgressAggregator, limits: [TokenBucket]) -> JobOutcome {
        let writer = DiskTargetWriter(
            target: target, progress: progress, verify: request.verify, knownTotal: reader.totalBytes,
            control: control, limits: limits, writtenSHA256: reader.writtenSHA256)
        progress.start(stage: "Opening")
        writer.open()
        reader.arrive(writer, member: member)
        writer.drain()
        return writer.outcome
    }
}
