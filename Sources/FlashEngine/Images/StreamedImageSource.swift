import Foundation
import Synchronization

/// The bytes of an image that can only be read in order (a decompressor, or a file checked
/// against its block map), produced by a background thread a few MiB ahead of the device, and
/// handed out by offset for the downloads planned over them. Offsets must be asked for in
/// increasing order across all downloads, which is how the planner lays them out.
final class StreamedImageSource: @unchecked Sendable {
    private enum Item {
        case piece(offset: Int64, count: Int, buffer: UnsafeMutableRawBufferPointer)
        case failed(Error)
    }

    private let path: String
    private let makeReader: () throws -> ImageExtentReader
    private let pool: BufferPool
    private let queue: BoundedQueue<Item>
    /// The producing thread once started, and whether `close()` was called.
    private let state = Mutex((producer: WorkerThread?.none, stopped: false))
    // Consumer state: the piece being handed out.
    private var current: (offset: Int64, count: Int, buffer: UnsafeMutableRawBufferPointer)?
    private var ended = false

    init(path: String, bufferSize: Int = 1 << 20, readAhead: Int = 4, makeReader: @escaping () throws -> ImageExtentReader) {
        self.path = path
        self.makeReader = makeReader
        pool = BufferPool(count: readAhead + 1, bufferSize: bufferSize)
        queue = BoundedQueue(capacity: readAhead)
    }

    deinit {
        close()
    }

    /// Copies the image's bytes at `offset` into `buffer`; returns how many (at least one).
    /// Throws when the image has no bytes there (it ended early) or could not be read.
    func read(at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        startIfNeeded()
        while true {
            if let piece = current {
                if offset < piece.offset {
                    throw FlashError(.image, "image \(path) has no data at byte \(offset)")
                }
                let skip = offset - piece.offset
                if skip < Int64(piece.count) {
                    let n = min(buffer.count, piece.count - Int(skip))
                    buffer.baseAddress!.copyMemory(from: piece.buffer.baseAddress! + Int(skip), byteCount: n)
                    return n
                }
                pool.give(piece.buffer)
                current = nil
            }
            guard !ended, let item = queue.take() else {
                ended = true
                throw FlashError(.image, "image \(path) ended at byte \(offset), before the data its size promised (was it changed while flashing?)")
            }
            switch item {
            case .piece(let offset, let count, let buffer):
                current = (offset, count, buffer)
            case .failed(let error):
                ended = true
                throw error
            }
        }
    }

    /// Stops the background reader and waits for it to end.
    func close() {
        let running = state.withLock { state -> WorkerThread? in
            defer { state.stopped = true }
            return state.stopped ? nil : state.producer
        }
        guard let running else { return }
        pool.close()
        queue.close()
        running.join()
    }

    private var isStopped: Bool {
        state.withLock { $0.stopped }
    }

    private func startIfNeeded() {
        state.withLock { state in
            guard state.producer == nil, !state.stopped else { return }
            do {
                state.producer = try WorkerThread.start(name: "image reader") { [self] in produce() }
            } catch {
                queue.put(.failed(error))
                queue.close()
            }
        }
    }

    private func produce() {
        do {
            let reader = try makeReader()
            while !isStopped {
                guard let buffer = pool.take() else { break }
                guard !isStopped, let (offset, count) = try reader.next(into: buffer) else {
                    pool.give(buffer)
                    break
                }
                queue.put(.piece(offset: offset, count: count, buffer: buffer))
            }
        } catch {
            queue.put(.failed(error))
        }
        queue.close()
    }
}

/// The bytes of one planned download whose image data comes from a `StreamedImageSource`.
final class PlannedPieceStream: ByteStream {
    private let segments: [ByteSegment]
    private let source: StreamedImageSource
    private var index = 0
    private var done: Int64 = 0

    init(segments: [ByteSegment], source: StreamedImageSource) {
        self.segments = segments
        self.source = source
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var filled = 0
        while filled < buffer.count, index < segments.count {
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[filled...])
            let left = segments[index].length - done
            let want = Int(min(Int64(part.count), left))
            let n: Int
            switch segments[index] {
            case .bytes(let bytes):
                bytes.withUnsafeBytes { part.baseAddress!.copyMemory(from: $0.baseAddress! + Int(done), byteCount: want) }
                n = want
            case .file(let offset, _):
                n = try source.read(at: offset + done, into: UnsafeMutableRawBufferPointer(rebasing: part[0..<want]))
            }
            filled += n
            done += Int64(n)
            if done == segments[index].length {
                index += 1
                done = 0
            }
        }
        return filled
    }
}
