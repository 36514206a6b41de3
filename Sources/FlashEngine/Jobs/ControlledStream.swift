import Crypto

/// The bytes of one download as a job sends them: held while the job is paused, metered by its
/// bandwidth caps, hashed, and stopped when the job is cancelled.
///
/// A cancel that arrives mid-download with little left (`paddingLimit`) finishes the download with
/// zeros instead of breaking off: the device is then back in its command phase, usable by the
/// next job, and the job never sends `flash`, so the zeros are never written. With more left, the
/// stream throws and the transfer is abandoned.
final class ControlledStream: ByteStream {
    private let inner: ByteStream
    private let control: JobControl
    private let buckets: [TokenBucket]
    private let digest: SentBytesDigest
    private let paddingLimit: Int64
    private var remaining: Int64
    private(set) var isPadding = false

    init(_ inner: ByteStream, size: Int64, control: JobControl, buckets: [TokenBucket], digest: SentBytesDigest, paddingLimit: Int64) {
        self.inner = inner
        self.remaining = size
        self.control = control
        self.buckets = buckets
        self.digest = digest
        self.paddingLimit = paddingLimit
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if !isPadding {
            do {
                try control.waitWhilePaused()
                let wait = buckets.map { $0.take(buffer.count) }.max() ?? 0
                if wait > 0 { try control.sleep(seconds: wait) }
            } catch let error as FlashError where error.kind == .cancelled {
                guard remaining <= paddingLimit else { throw error }
                isPadding = true
            }
        }
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

/// SHA-256 of everything a job sent, across all its downloads.
final class SentBytesDigest: @unchecked Sendable {
    private var hasher = SHA256()

    func update(_ bytes: UnsafeRawBufferPointer) {
        hasher.update(bufferPointer: bytes)
    }

    func finalizeHex() -> String {
        let digits = Array("0123456789abcdef")
        return String(hasher.finalize().flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xf)]] })
    }
}
