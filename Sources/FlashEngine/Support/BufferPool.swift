import Foundation

/// A fixed set of aligned buffers: the reader takes one per piece and waits when all are in use,
/// which bounds memory and paces the reader to the slowest target.
final class BufferPool: @unchecked Sendable {
    let bufferSize: Int
    private var free: [UnsafeMutableRawBufferPointer]
    private let all: [UnsafeMutableRawBufferPointer]
    private let condition = NSCondition()
    private var closed = false

    init(count: Int, bufferSize: Int) {
        self.bufferSize = bufferSize
        all = (0..<count).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 4096) }
        free = all
    }

    deinit {
        all.forEach { $0.deallocate() }
    }

    /// A free buffer, waiting while all are in use; nil once the pool is closed.
    func take() -> UnsafeMutableRawBufferPointer? {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty, !closed { condition.wait() }
        return closed ? nil : free.removeLast()
    }

    /// Wakes a taker waiting for a buffer, and every later one, with nil: for a producer that must stop.
    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    func give(_ buffer: UnsafeMutableRawBufferPointer) {
        condition.lock()
        free.append(buffer)
        condition.signal()
        condition.unlock()
    }
}
