import Foundation
import Synchronization

/// What a batch's reader hands a disk.
enum PieceMessage {
    case piece(SharedPiece)
    /// The image is complete.
    case end
    /// Reading the image failed: every disk stops.
    case abort(FlashError)
}

/// One disk's side of a batch: writes the pieces it is given (held while its job is paused,
/// metered by its bandwidth caps), then flushes and reads everything back. The SHA-256 of what
/// was written comes from the batch's hasher (`writtenSHA256`), computed on its own thread while
/// this one writes and reads back.
final class DiskTargetWriter: @unchecked Sendable {
    let target: DiskTarget
    let queue = BoundedQueue<PieceMessage>(capacity: 4)
    private let progress: ProgressAggregator
    private let verify: Bool
    private let knownTotal: Int64?
    private let control: JobControl
    private let limits: [TokenBucket]
    private let writtenSHA256: () -> String?
    private var writer: DiskWriter?
    private let alive = Atomic<Bool>(true)
    private(set) var outcome = JobOutcome(state: .failed, error: "not run", bytesSent: 0)

    init(target: DiskTarget, progress: ProgressAggregator, verify: Bool, knownTotal: Int64?, control: JobControl, limits: [TokenBucket], writtenSHA256: @escaping () -> String?) {
        self.target = target
        self.progress = progress
        self.verify = verify
        self.knownTotal = knownTotal
        self.control = control
        self.limits = limits
        self.writtenSHA256 = writtenSHA256
        if let knownTotal { progress.setTotalBytes(knownTotal) }
    }

    var isAlive: Bool { alive.load(ordering: .relaxed) }

    func open() {
        do {
            try control.checkCancelled()
            writer = try DiskWriter(path: target.path, isBlockDevice: target.isBlockDevice, alignment: target.disk?.logicalBlockSize ?? 512, digestsWrites: verify)
            progress.setStage("Writing")
        } catch {
            fail(error)
        }
    }

    /// Runs on the job's thread until the reader says the image is complete (or gave up).
    func drain() {
        var aborted: FlashError?
        while let message = queue.take() {
            switch message {
            case .piece(let piece):
                defer { piece.release() }
                guard isAlive, let writer else { continue }
                do {
                    try control.waitWhilePaused()
                    let wait = limits.map { $0.take(piece.bytes.count) }.max() ?? 0
                    if wait > 0 { try control.sleep(seconds: wait) }
                    try writer.write(piece.bytes, at: piece.offset)
                    if knownTotal == nil, piece.inputFraction > 0 {
                        // Size unknown (gzip, xz...): the total is extrapolated from the input read,
                        // so the percentage follows the compressed bytes.
                        progress.setTotalBytes(max(writer.bytesWritten, Int64(Double(writer.bytesWritten) / piece.inputFraction)))
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
        if isAlive { fail(FlashError(.io, "the image reader stopped before the image was complete")) }
        writer = nil
    }

    private func complete() {
        guard let writer else { return }
        do {
            let written = writer.bytesWritten
            progress.setTotalBytes(written)
            progress.setStage("Flushing")
            let writtenDigest = try writer.finish()
            var sha256: String?
            if verify, let writtenDigest {
                progress.beginPass(stage: "Verifying")
                try DiskVerifier.verify(
                    path: target.path, extents: writer.extents, expected: writtenDigest, alignment: writer.alignment,
                    onBytes: { checked in self.progress.update(bytesTransferred: checked) },
                    checkCancelled: {
                        try self.control.waitWhilePaused()
                        try self.control.checkCancelled()
                    })
                sha256 = writtenSHA256()
                guard sha256 != nil else { throw FlashError(.io, "the image reader stopped before the image was complete") }
            }
            progress.completed(sha256: sha256, verified: verify)
            outcome = JobOutcome(state: .completed, bytesSent: written, sha256: sha256, verified: verify)
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
            progress.stopped(by: control.stopCause)
            outcome = .stopped(by: control.stopCause, bytesSent: written)
        } else {
            progress.failed(error: flashError.message)
            outcome = JobOutcome(state: .failed, error: flashError.message, bytesSent: written)
        }
    }
}
