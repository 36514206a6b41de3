import Synchronization

/// Lets another thread stop a running job at the next chunk boundary.
public final class JobControl: Sendable {
    private let cancelled = Atomic<Bool>(false)

    public init() {}

    public func cancel() {
        cancelled.store(true, ordering: .sequentiallyConsistent)
    }

    public var isCancelled: Bool {
        cancelled.load(ordering: .sequentiallyConsistent)
    }

    func checkCancelled() throws {
        if isCancelled {
            throw FlashError(.cancelled, "cancelled by user")
        }
    }
}

/// Passes bytes through, stopping with a cancellation error once the job is cancelled.
final class CancellableStream: ByteStream {
    private let inner: ByteStream
    private let control: JobControl

    init(_ inner: ByteStream, control: JobControl) {
        self.inner = inner
        self.control = control
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try control.checkCancelled()
        return try inner.read(into: buffer)
    }
}
