import Synchronization

/// The bytes of one download as a job sends them: held while the job is paused, metered by its
/// bandwidth caps, hashed, and stopped when the job is cancelled.
///
/// Over USB, a cancel that arrives mid-download with little left finishes the download with zeros
/// instead of breaking off: the device is then back in its command phase, usable by the next job,
/// and the job never sends `flash`, so the zeros are never written. "Little" is what the device
/// acknowledges in about two seconds at this download's rate (at least `CancelPadding.minimum`,
/// at most `.maximum`; the rate counts at least one second), so a cancel always ends promptly.
/// With more left, or over TCP (`padsOnCancel` false), the stream throws and the transfer is
/// abandoned (`FastbootTransport.abandonDownload`).
final class ControlledStream: LendingByteStream {
    private let inner: LendingByteStream
    private let control: JobControl
    private let buckets: [TokenBucket]
    private let digest: XXH128Digest
    private let clock: any FlashClock
    private let startedAt: UInt64
    private var remaining: Int64
    private let acknowledgedBytes = Atomic<Int64>(0)
    private(set) var isPadding = false
    /// The zeros `borrow` lends while padding.
    private var zeros = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    private let padsOnCancel: Bool

    init(_ inner: ByteStream, size: Int64, control: JobControl, buckets: [TokenBucket], digest: XXH128Digest, clock: any FlashClock, padsOnCancel: Bool) {
        self.padsOnCancel = padsOnCancel
        self.inner = inner as? LendingByteStream ?? CopyingLender(inner)
        self.remaining = size
        self.control = control
        self.buckets = buckets
        self.digest = digest
        self.clock = clock
        self.startedAt = clock.monotonicNanos()
    }

    /// Bytes of this download the device has taken so far (the transport's count).
    func acknowledged(_ bytes: Int64) {
        acknowledgedBytes.store(bytes, ordering: .relaxed)
    }

    /// The most a cancel pads with at this download's rate so far.
    private var paddingLimit: Int64 {
        let elapsed = max(1, Double(clock.monotonicNanos() - startedAt) / 1e9)
        let rate = Double(acknowledgedBytes.load(ordering: .relaxed)) / elapsed
        return min(CancelPadding.maximum, max(CancelPadding.minimum, Int64(rate * CancelPadding.seconds)))
    }

    deinit {
        zeros.deallocate()
    }

    /// Holds the caller while the job is paused, then as long as the caps ask for `count` bytes.
    /// A cancel throws, or turns the rest of the download into padding (see above).
    private func pace(_ count: Int, paused: Bool = true) throws {
        guard !isPadding else { return }
        do {
            if paused { try control.waitWhilePaused() }
            let wait = count > 0 ? buckets.map { $0.take(count) }.max() ?? 0 : 0
            if wait > 0 { try control.sleep(seconds: wait) }
        } catch let error as FlashError where error.kind == .cancelled {
            guard padsOnCancel, remaining <= paddingLimit else { throw error }
            isPadding = true
        }
    }

    func borrow(maxLength: Int) throws -> UnsafeRawBufferPointer? {
        var count = Int(min(Int64(maxLength), remaining))
        guard count > 0 else { return nil }
        try pace(0)
        if !isPadding {
            guard let piece = try inner.borrow(maxLength: count) else { return nil }
            // Paced on what was lent, which may be less than asked for (a buffer boundary).
            try pace(piece.count, paused: false)
            if !isPadding {
                digest.update(piece)
                remaining -= Int64(piece.count)
                return piece
            }
            // A cancel while it waited: zeros in its place.
            count = piece.count
        }
        if zeros.count < count {
            zeros.deallocate()
            zeros = .allocate(byteCount: count, alignment: 16)
            zeros.initializeMemory(as: UInt8.self, repeating: 0)
        }
        remaining -= Int64(count)
        return UnsafeRawBufferPointer(rebasing: zeros[0..<count])
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try pace(buffer.count)
        if isPadding {
            let count = Int(min(Int64(buffer.count), remaining))
            if count > 0 { buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: count) }
            remaining -= Int64(count)
            return count
        }
        let count = try inner.read(into: buffer)
        digest.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        remaining -= Int64(count)
        return count
    }
}

enum CancelPadding {
    static let seconds = 2.0
    static let minimum: Int64 = 4 << 20
    static let maximum: Int64 = 64 << 20
}
