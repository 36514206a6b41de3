#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Streams the bytes of a list of segments (`.bytes` held in memory, `.file` ranges of the file at
/// `path`) in order, reading the file on a background thread ahead of the consumer, so disk reads
/// overlap with whatever the consumer does (USB transfers). Memory stays bounded: at most
/// `readAhead` buffers of `bufferSize` bytes.
///
/// One consumer calls `read(into:)`; `close()` may be called from any thread, also while a read
/// waits, and makes that read throw. A read error, or a file shorter than a segment, is thrown
/// by `read(into:)` once the bytes read before it have been delivered.
public final class SegmentReader: ByteStream, @unchecked Sendable {
    public let path: String
    public let segments: [ByteSegment]
    /// Bytes the reader delivers in all: the segments' total length.
    public let totalLength: Int64

    private let queue: ReadAheadQueue
    private let closed = Atomic<Bool>(false)
    // Consumer state, touched only by the one thread calling `read(into:)`.
    private var current: Int?
    private var currentOffset = 0

    public init(path: String, segments: [ByteSegment], bufferSize: Int = 1 << 20, readAhead: Int = 4) {
        self.path = path
        self.segments = segments
        self.totalLength = segments.totalLength
        queue = ReadAheadQueue(path: path, segments: segments, bufferSize: max(1, bufferSize), bufferCount: max(1, readAhead))
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
        if closed.load(ordering: .acquiring) {
            throw FlashError(.io, "reading image \(path) was stopped")
        }
        guard let destination = buffer.baseAddress else { return 0 }
        var written = 0
        while written < buffer.count {
            if let index = current, currentOffset < queue.filledCount[index] {
                let source = queue.buffers[index]
                let n = min(buffer.count - written, queue.filledCount[index] - currentOffset)
                (destination + written).copyMemory(from: source.baseAddress! + currentOffset, byteCount: n)
                written += n
                currentOffset += n
                continue
            }
            let previous = current
            current = nil
            currentOffset = 0
            switch try queue.next(returning: previous) {
            case .buffer(let index):
                current = index
            case .end:
                return written
            }
        }
        return written
    }
}

/// The buffers and their hand-over between the reading thread and the consumer.
private final class ReadAheadQueue: @unchecked Sendable {
    enum Next {
        case buffer(Int)
        case end
    }

    let path: String
    let segments: [ByteSegment]
    let bufferSize: Int
    /// Fixed buffers; which side owns one is decided under the mutex, by the lists below.
    let buffers: [UnsafeMutableRawBufferPointer]
    /// Valid bytes of each buffer: written by the producer before it queues the buffer, read
    /// by the consumer after it takes it (the mutex orders the two).
    let filledCount: UnsafeMutableBufferPointer<Int>

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let dataReady = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let spaceReady = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Guarded by `mutex`.
    private var free: [Int]
    private var filled: [Int] = []
    private var filledHead = 0
    private var finished = false
    private var failure: FlashError?
    private var stopping = false
    private var thread: pthread_t?

    init(path: String, segments: [ByteSegment], bufferSize: Int, bufferCount: Int) {
        self.path = path
        self.segments = segments
        self.bufferSize = bufferSize
        buffers = (0..<bufferCount).map { _ in
            UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 4096)
        }
        filledCount = .allocate(capacity: bufferCount)
        filledCount.initialize(repeating: 0)
        free = Array(0..<bufferCount)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(dataReady, nil)
        pthread_cond_init(spaceReady, nil)
    }

    deinit {
        for buffer in buffers { buffer.deallocate() }
        filledCount.deallocate()
        pthread_cond_destroy(spaceReady)
        pthread_cond_destroy(dataReady)
        pthread_mutex_destroy(mutex)
        spaceReady.deallocate()
        dataReady.deallocate()
        mutex.deallocate()
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    func start() {
        var handle = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&handle, nil, { context in
            let queue = Unmanaged<ReadAheadQueue>.fromOpaque(context!).takeRetainedValue()
            queue.produce()
            return nil
        }, context)
        if result != 0 {
            Unmanaged<ReadAheadQueue>.fromOpaque(context).release()
            locked { failure = FlashError(.io, "cannot start a reader thread for image \(path): \(errnoText(result))") }
        } else {
            locked { thread = handle }
        }
    }

    /// Tells the producer to stop, wakes everyone, and joins the producer thread.
    func stop() {
        let joinable: pthread_t? = locked {
            stopping = true
            pthread_cond_broadcast(dataReady)
            pthread_cond_broadcast(spaceReady)
            defer { thread = nil }
            return thread
        }
        if let joinable {
            pthread_join(joinable, nil)
        }
    }

    // MARK: Consumer side

    /// Gives back the buffer the consumer finished (if any) and waits for the next full one.
    func next(returning used: Int?) throws -> Next {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if let used {
            free.append(used)
            pthread_cond_signal(spaceReady)
        }
        while true {
            if stopping {
                throw FlashError(.io, "reading image \(path) was stopped")
            }
            if filledHead < filled.count {
                let index = filled[filledHead]
                filledHead += 1
                if filledHead == filled.count {
                    filled.removeAll(keepingCapacity: true)
                    filledHead = 0
                }
                return .buffer(index)
            }
            if let failure { throw failure }
            if finished { return .end }
            pthread_cond_wait(dataReady, mutex)
        }
    }

    // MARK: Producer side

    private func takeFreeBuffer() -> Int? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while free.isEmpty && !stopping {
            pthread_cond_wait(spaceReady, mutex)
        }
        if stopping { return nil }
        return free.removeLast()
    }

    private func deliver(_ index: Int?, finished isLast: Bool) {
        locked {
            if let index { filled.append(index) }
            if isLast { finished = true }
            pthread_cond_signal(dataReady)
        }
    }

    private func fail(_ error: FlashError) {
        locked {
            failure = error
            pthread_cond_signal(dataReady)
        }
    }

    private var isStopping: Bool { locked { stopping } }

    private func produce() {
        var file: ImageDescriptor?
        for segment in segments {
            if case .file(let offset, let length) = segment {
                guard offset >= 0, length >= 0 else {
                    fail(FlashError(.image, "invalid range of image \(path): offset \(offset), length \(length)"))
                    return
                }
                if file == nil {
                    do {
                        file = try ImageDescriptor.open(path: path)
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
            if segmentIndex == segments.count {
                deliver(nil, finished: true)
                return
            }
            guard let index = takeFreeBuffer() else { return }
            let buffer = buffers[index]
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
            filledCount[index] = filledBytes
            if isStopping { return }
            deliver(index, finished: segmentIndex == segments.count)
            if segmentIndex == segments.count { return }
        }
    }
}
