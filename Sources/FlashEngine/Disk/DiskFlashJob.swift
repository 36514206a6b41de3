import Foundation
import Synchronization

/// What to write where: one image to one or more disks.
public struct DiskFlashRequest: Sendable {
    public var imagePath: String
    public var targets: [String]
    public var bmapPath: String?
    public var noBmap: Bool
    public var entry: String?
    /// Write even to targets `DiskTarget.refusals` objects to.
    public var force: Bool
    /// Read everything back and compare (on by default, as people expect of a disk writer).
    public var verify: Bool

    public init(imagePath: String, targets: [String], bmapPath: String? = nil, noBmap: Bool = false, entry: String? = nil, force: Bool = false, verify: Bool = true) {
        self.imagePath = imagePath
        self.targets = targets
        self.bmapPath = bmapPath
        self.noBmap = noBmap
        self.entry = entry
        self.force = force
        self.verify = verify
    }
}

/// Writes one image to one or more disks: one read and one decompression feed every target.
///
/// Reading (and decompressing) runs on the calling thread and each target is written by a
/// thread of its own, with a few pieces in flight between them (bounded), so reading,
/// decompressing and writing overlap. Each target is its own job with its own events; a target
/// that fails is dropped with its own `flash_failed` while the others go on.
public final class DiskFlashJob: @unchecked Sendable {
    public struct Target: Sendable {
        public let jobId: String
        public let target: DiskTarget
    }

    public static let pieceSize = 4 << 20
    public static let piecesInFlight = 8

    public let request: DiskFlashRequest
    public let image: DiskImage
    public let targets: [Target]
    public let control = JobControl()
    private let clock: FlashClock

    /// Checks the image, its block map and every target before anything is written: a refusal
    /// here leaves every disk untouched.
    public static func prepare(_ request: DiskFlashRequest, discovery: DiskDiscovery = DiskDiscovery(), clock: FlashClock = SystemClock()) throws -> DiskFlashJob {
        guard !request.targets.isEmpty else { throw FlashError(.deviceSelection, "no target disk given") }
        let image = try DiskImage.open(path: request.imagePath, bmapPath: request.bmapPath, noBmap: request.noBmap, entry: request.entry, checksRanges: request.verify)
        var resolved: [Target] = []
        var problems: [String] = []
        for path in request.targets {
            let target = try DiskTarget.resolve(path, discovery: discovery)
            if resolved.contains(where: { $0.target.path == target.path }) {
                throw FlashError(.deviceSelection, "\(target.path) is named twice")
            }
            if try Self.isSameFile(target.path, request.imagePath) {
                throw FlashError(.unsafeTarget, "\(target.path) is the image itself")
            }
            if let hard = target.hardRefusal { problems.append(hard) }
            if !request.force { problems += target.refusals(imageSize: image.imageSize) }
            resolved.append(Target(jobId: JobID.make(), target: target))
        }
        if !problems.isEmpty {
            let overridable = problems.count > resolved.compactMap(\.target.hardRefusal).count
            throw FlashError(.unsafeTarget, problems.joined(separator: "; ") + (overridable ? ". Nothing was written. --force writes anyway." : ". Nothing was written."))
        }
        return DiskFlashJob(request: request, image: image, targets: resolved, clock: clock)
    }

    private init(request: DiskFlashRequest, image: DiskImage, targets: [Target], clock: FlashClock) {
        self.request = request
        self.image = image
        self.targets = targets
        self.clock = clock
    }

    public func info(for target: Target) -> JobInfo {
        JobInfo(jobId: target.jobId, deviceId: target.target.path, deviceName: target.target.disk?.description, image: request.imagePath, partition: nil)
    }

    /// Runs every target to its end on the calling thread (plus one thread per target) and
    /// returns each target's outcome, in the order of `targets`.
    public func run(progress: (Target) -> ProgressAggregator) -> [JobOutcome] {
        let reporters = targets.map(progress)
        let writers = zip(targets, reporters).map { TargetWriter(target: $0.0.target, progress: $0.1, verify: request.verify, knownTotal: image.totalBytes, control: control) }
        reporters.forEach { $0.start(stage: "Opening") }
        for writer in writers { writer.open() }
        let threads = writers.map { writer in
            let thread = Thread { writer.drain() }
            thread.stackSize = 1 << 20
            thread.start()
            return thread
        }
        _ = threads
        feed(writers)
        writers.forEach { $0.waitUntilDone() }
        return writers.map(\.outcome)
    }

    /// Reads the image and hands each piece to every target still going.
    private func feed(_ writers: [TargetWriter]) {
        let pool = BufferPool(count: Self.piecesInFlight + writers.count * 2, bufferSize: Self.pieceSize)
        do {
            let reader = try image.makeReader()
            while true {
                try control.waitWhilePaused()
                try control.checkCancelled()
                let alive = writers.filter { $0.isAlive }
                if alive.isEmpty { break }
                let buffer = pool.take()
                guard let piece = try reader.next(into: buffer) else {
                    pool.give(buffer)
                    break
                }
                let shared = SharedPiece(offset: piece.offset, count: piece.count, inputFraction: reader.inputFraction, buffer: buffer, pool: pool, holders: alive.count)
                alive.forEach { $0.queue.put(.piece(shared)) }
            }
            writers.forEach { $0.queue.put(.end) }
        } catch let error as FlashError {
            writers.forEach { $0.queue.put(.abort(error)) }
        } catch {
            writers.forEach { $0.queue.put(.abort(FlashError(.io, "\(error)"))) }
        }
        writers.forEach { $0.queue.close() }
    }

    static func isSameFile(_ a: String, _ b: String) throws -> Bool {
        var x = stat(), y = stat()
        guard stat(a, &x) == 0, stat(b, &y) == 0 else { return false }
        return x.st_dev == y.st_dev && x.st_ino == y.st_ino
    }
}

/// What the reader hands a target.
enum PieceMessage {
    case piece(SharedPiece)
    /// The image is complete.
    case end
    /// Reading the image failed (or the job was cancelled): every target stops.
    case abort(FlashError)
}

/// One target's side of a disk job: writes the pieces it is given, then flushes and verifies.
final class TargetWriter: @unchecked Sendable {
    let target: DiskTarget
    let queue = BoundedQueue<PieceMessage>(capacity: 4)
    private let progress: ProgressAggregator
    private let verify: Bool
    private let knownTotal: Int64?
    private let control: JobControl
    private var writer: DiskWriter?
    private let alive = Atomic<Bool>(true)
    private let done = NSCondition()
    private var finished = false
    private(set) var outcome = JobOutcome(state: .failed, error: "not run", bytesSent: 0, sha256: nil)

    init(target: DiskTarget, progress: ProgressAggregator, verify: Bool, knownTotal: Int64?, control: JobControl) {
        self.target = target
        self.progress = progress
        self.verify = verify
        self.knownTotal = knownTotal
        self.control = control
        if let knownTotal { progress.setTotalBytes(knownTotal * (verify ? 2 : 1)) }
    }

    var isAlive: Bool { alive.load(ordering: .relaxed) }

    func open() {
        do {
            writer = try DiskWriter(path: target.path, isBlockDevice: target.isBlockDevice, alignment: target.disk?.logicalBlockSize ?? 512, hashing: verify)
            progress.setStage("Writing \(target.path)")
        } catch {
            fail(error)
        }
    }

    /// Runs on the target's own thread until the reader says the image is complete.
    func drain() {
        var aborted: FlashError?
        while let message = queue.take() {
            switch message {
            case .piece(let piece):
                defer { piece.release() }
                guard isAlive, let writer else { continue }
                do {
                    try control.checkCancelled()
                    try writer.write(piece.bytes, at: piece.offset)
                    if knownTotal == nil, piece.inputFraction > 0 {
                        // Size unknown (gzip, xz...): the total is extrapolated from the input read,
                        // so the percentage follows the compressed bytes.
                        let estimate = max(writer.bytesWritten, Int64(Double(writer.bytesWritten) / piece.inputFraction))
                        progress.setTotalBytes(estimate * (verify ? 2 : 1))
                    }
                    progress.update(bytesTransferred: writer.bytesWritten)
                } catch {
                    fail(error)
                }
            case .end:
                if isAlive { complete() }
            case .abort(let error):
                aborted = error
            }
        }
        if let aborted, isAlive { fail(aborted) }
        writer = nil
        done.lock()
        finished = true
        done.broadcast()
        done.unlock()
    }

    func waitUntilDone() {
        done.lock()
        while !finished { done.wait() }
        done.unlock()
    }

    private func complete() {
        guard let writer else { return }
        do {
            let written = writer.bytesWritten
            progress.setTotalBytes(written * (verify ? 2 : 1))
            progress.setStage("Flushing \(target.path)")
            let sha256 = try writer.finish()
            if verify, let sha256 {
                progress.setStage("Verifying \(target.path)")
                var shownPercent = -1
                try DiskVerifier.verify(
                    path: target.path, extents: writer.extents, expected: sha256, alignment: writer.alignment,
                    onBytes: { checked in
                        let percent = written > 0 ? Int(checked * 100 / written) : 100
                        if percent != shownPercent {
                            shownPercent = percent
                            self.progress.setStage("Verifying \(self.target.path) \(percent)%")
                        }
                        self.progress.update(bytesTransferred: written + checked)
                    },
                    checkCancelled: { try self.control.checkCancelled() })
            }
            progress.completed()
            outcome = JobOutcome(state: .completed, error: nil, bytesSent: written, sha256: sha256)
            alive.store(false, ordering: .relaxed)
        } catch {
            fail(error)
        }
    }

    private func fail(_ error: Error) {
        guard alive.exchange(false, ordering: .relaxed) else { return }
        let flashError = error as? FlashError ?? FlashError(.io, "\(error)")
        let written = writer?.bytesWritten ?? 0
        if flashError.kind == .cancelled {
            progress.cancelled("Flash cancelled by user")
            outcome = JobOutcome(state: .cancelled, error: "Flash cancelled by user", bytesSent: written, sha256: nil)
        } else {
            progress.failed(error: flashError.message)
            outcome = JobOutcome(state: .failed, error: flashError.message, bytesSent: written, sha256: nil)
        }
    }
}
