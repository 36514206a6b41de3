import Foundation

/// A fixed set of aligned buffers: the reader takes one per piece and waits when all are in use,
/// which bounds memory and paces the reader to the slowest target.
final class BufferPool: @unchecked Sendable {
    let bufferSize: Int
    private var free: [UnsafeMutableRawBufferPointer]
    private let all: [UnsafeMutableRawBufferPointer]
    private let condition = NSCondition()

    init(count: Int, bufferSize: Int) {
        self.bufferSize = bufferSize
        all = (0..<count).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 4096) }
        free = all
    }

    deinit {
        all.forEach { $0.deallocate() }
    }

    func take() -> UnsafeMutableRawBufferPointer {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty { condition.wait() }
        return free.removeLast()
    }

    func give(_ buffer: UnsafeMutableRawBufferPointer) {
        condition.lock()
        free.append(buffer)
        condition.signal()
        condition.unlock()
    }
}
