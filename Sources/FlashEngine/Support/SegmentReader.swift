#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Streams the bytes of a list of segments (`.bytes` held in memory, `.file` ranges of the file at
/// `path`) in order, reading the file on a background thread ahead of the consumer, so disk reads
/// overlap with whatever the consumer does (USB transfers). Memory stays bounded: at most
/// `readAhead` buffers of `bufferSize` bytes.
///
/// One consumer calls `read(into:)` or `borrow(maxLength:)`; `close()` may be called from any
/// thread, also while a read waits, and makes that read throw. A read error, or a file shorter
/// than a segment, is thrown once the bytes read before it have been delivered. A file whose size
/// or modification time changed while it was read fails the last read: the device would get a
/// mix of old and new bytes.
public final class SegmentReader: LendingByteStream, @unchecked Sendable {
    public let path: String
    public let segments: [ByteSegment]
    /// Bytes the reader delivers in all: the segments' total length.
    public let totalLength: Int64

    private let queue: ReadAheadQueue
    private let closed = Atomic<Bool>(false)
    // Consumer state, touched only by the one thread calling `read(into:)`.
    private var current: (buffer: UnsafeMutableRawBufferPointer, count: Int)?
    private var currentOffset = 0
    private var delivered: Int64 = 0

    public convenience init(path: String, segments: [ByteSegment], bufferSize: Int = 1 << 20, readAhead: Int = 4) {
        self.init(path: path, segments: segments, file: nil, expected: nil, bufferSize: bufferSize, readAhead: readAhead)
    }

    /// `file`: the image already held open for the job (read instead of opening `path`);
    /// `expected`: the file as the job checked it, when `path` has to be opened here.
    init(path: String, segments: [ByteSegment], file: HeldImageFile?, expected: ImageIdentity?, bufferSize: Int = 1 << 20, readAhead: Int = 4) {
        self.path = path
        self.segments = segments
        self.totalLength = segments.totalLength
        queue = ReadAheadQueue(path: path, segments: segments, file: file, expected: expected, bufferSize: max(1, bufferSize), bufferCount: max(1, readAhead))
        queue.start()
    }

    deinit {
        queue.stop()
    }

    /// Stops the background reader and waits for it to end. Reads after this throw.
    public func close() {
        closed.store(true, ordering: .releasing)
        queue.stop()
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let destination = buffer.baseAddress else { return 0 }
        var written = 0
        while written < buffer.count, let piece = try borrow(maxLength: buffer.count - written) {
            (destination + written).copyMemory(from: piece.baseAddress!, byteCount: piece.count)
            written += piece.count
        }
        return written
    }

    public func borrow(maxLength: Int) throws -> UnsafeRawBufferPointer? {
        if closed.load(ordering: .acquiring) {
            throw FlashError(.io, "reading image \(path) was stopped")
        }
        while true {
            if let piece = current, currentOffset < piece.count {
                let n = min(maxLength, piece.count - currentOffset)
                if delivered + Int64(n) == totalLength { try queue.checkUnchanged() }
                let bytes = UnsafeRawBufferPointer(start: piece.buffer.baseAddress! + currentOffset, count: n)
                currentOffset += n
                delivered += Int64(n)
                return bytes
            }
            let previous = current?.buffer
            current = nil
            currentOffset = 0
            guard let next = try queue.next(returning: previous) else { return nil }
            current = next
        }
    }
}

/// The read-ahead: a thread that fills buffers from a pool and queues them, bounded by the pool.
private final class ReadAheadQueue: @unchecked Sendable {
    private enum Item {
        case filled(UnsafeMutableRawBufferPointer, count: Int)
        case failed(FlashError)
    }

    let path: String
    let segments: [ByteSegment]
    let bufferSize: Int
    private let pool: BufferPool
    private let filled: BoundedQueue<Item>
    private let stopping = Atomic<Bool>(false)
    private let producer = Mutex<WorkerThread?>(nil)
    /// The producer's failure once the consumer has met it: every later read throws it too.
    private var failure: FlashError?
    /// The image: held for the job, or once the producer opened it (on its thread: opening may
    /// block, e.g. on a FIFO, and `stop()` must still end the wait).
    private let opened: Mutex<HeldImageFile?>
    private let expected: ImageIdentity?

    init(path: String, segments: [ByteSegment], file: HeldImageFile?, expected: ImageIdentity?, bufferSize: Int, bufferCount: Int) {
        opened = Mutex(file)
        self.expected = expected
        self.path = path
        self.segments = segments
        self.bufferSize = bufferSize
        pool = BufferPool(count: bufferCount, bufferSize: bufferSize)
        filled = BoundedQueue(capacity: bufferCount)
    }

    /// Throws when the file's size or modification time changed since it was opened.
    func checkUnchanged() throws {
        try opened.withLock { $0 }?.checkUnchanged()
    }

    func start() {
        producer.withLock { producer in
            do {
                producer = try WorkerThread.start(name: "image read-ahead") { [self] in
                    produce()
                    filled.close()
                }
            } catch {
                fail(error as? FlashError ?? FlashError(.io, "\(error)"))
                filled.close()
            }
        }
    }

    /// Tells the producer to stop, wakes everyone, and waits for the producer to end.
    func stop() {
        stopping.store(true, ordering: .releasing)
        pool.close()
        filled.close()
        producer.withLock { $0 }?.join()
    }

    // MARK: Consumer side

    /// Gives back the buffer the consumer finished (if any) and waits for the next full one;
    /// nil at the end of the segments.
    func next(returning used: UnsafeMutableRawBufferPointer?) throws -> (buffer: UnsafeMutableRawBufferPointer, count: Int)? {
        if let used { pool.give(used) }
        if let failure { throw failure }
        let item = filled.take()
        if stopping.load(ordering: .acquiring) {
            throw FlashError(.io, "reading image \(path) was stopped")
        }
        switch item {
        case .filled(let buffer, let count): return (buffer, count)
        case .failed(let error):
            failure = error
            throw error
        case nil: return nil
        }
    }

    // MARK: Producer side

    private func fail(_ error: FlashError) {
        filled.put(.failed(error))
    }

    private func produce() {
        var file = opened.withLock { $0 }?.descriptor
        for segment in segments {
            if case .file(let offset, let length) = segment {
                guard offset >= 0, length >= 0 else {
                    fail(FlashError(.image, "invalid range of image \(path): offset \(offset), length \(length)"))
                    return
                }
                if file == nil {
                    do {
                        let held = try HeldImageFile(path: path, expected: expected)
                        opened.withLock { $0 = held }
                        file = held.descriptor
                    } catch let error as FlashError {
                        fail(error)
                        return
                    } catch {
                        fail(FlashError(.io, "cannot read image \(path): \(error)"))
                        return
                    }
                }
            }
        }

        var segmentIndex = 0
        var segmentOffset: Int64 = 0
        while true {
            // Skip empty segments so the last buffer is marked last.
            while segmentIndex < segments.count, segments[segmentIndex].length == 0 {
                segmentIndex += 1
            }
            if segmentIndex == segments.count { return }
            guard let buffer = pool.take() else { return }
            var filledBytes = 0
            do {
                while filledBytes < bufferSize, segmentIndex < segments.count {
                    let segment = segments[segmentIndex]
                    let n = Int(min(Int64(bufferSize - filledBytes), segment.length - segmentOffset))
                    let target = UnsafeMutableRawBufferPointer(rebasing: buffer[filledBytes..<(filledBytes + n)])
                    switch segment {
                    case .bytes(let bytes):
                        bytes.withUnsafeBytes { source in
                            target.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[Int(segmentOffset)..<(Int(segmentOffset) + n)]))
                        }
                    case .file(let offset, let length):
                        let got = try file!.readAvailable(into: target, at: offset + segmentOffset)
                        if got < n {
                            throw FlashError(.image, "image \(path) is shorter than expected: needed bytes up to offset \(offset + length), but it ends at offset \(offset + segmentOffset + Int64(got)) (was the file changed or truncated?)")
                        }
                    }
                    filledBytes += n
                    segmentOffset += Int64(n)
                    if segmentOffset == segment.length {
                        segmentIndex += 1
                        segmentOffset = 0
                        while segmentIndex < segments.count, segments[segmentIndex].length == 0 {
                            segmentIndex += 1
                        }
                    }
                }
            } catch let error as FlashError {
                fail(error)
                return
            } catch {
                fail(FlashError(.io, "cannot read image \(path): \(error)"))
                return
            }
            if stopping.load(ordering: .acquiring) { return }
            filled.put(.filled(buffer, count: filledBytes))
            if segmentIndex == segments.count { return }
        }
    }
}
