import Crypto
import Foundation

/// The SHA-256 of a batch's image as it is written (every piece, in order), computed on a thread
/// of its own from the same buffers the disks are written from: `flash_completed` carries it, and
/// this way it costs the writers no time and is computed once however many disks the batch has.
///
/// Its queue is bounded, so it holds at most a few pieces more than the writers do; a piece's
/// buffer goes back to the pool once it and every disk are done with it.
final class StreamHasher: @unchecked Sendable {
    private let queue = BoundedQueue<SharedPiece>(capacity: 4)
    private let state = NSCondition()
    private var thread: WorkerThread?
    private var digest = SHA256()
    private var result: String?
    private var ended = false

    func start() throws {
        thread = try WorkerThread.start(name: "image sha256") { [self] in
            while let piece = queue.take() {
                digest.update(bufferPointer: piece.bytes)
                piece.release()
            }
        }
    }

    /// Hashes `piece` after those given before it; the piece must count the hasher as a holder.
    func add(_ piece: SharedPiece) {
        queue.put(piece)
    }

    /// The image is complete: hashes what is queued and makes the digest available.
    func finish() {
        end(complete: true)
    }

    /// The image will not be complete (reading it failed): no digest.
    func abandon() {
        end(complete: false)
    }

    /// The hex SHA-256 of every piece given, once `finish()` was called (waiting until then);
    /// nil after `abandon()`.
    func sha256() -> String? {
        state.lock()
        defer { state.unlock() }
        while !ended { state.wait() }
        return result
    }

    private func end(complete: Bool) {
        queue.close()
        thread?.join()
        let hex = complete ? digest.finalize().map { byteHex($0) }.joined() : nil
        state.lock()
        result = hex
        ended = true
        state.broadcast()
        state.unlock()
    }
}
