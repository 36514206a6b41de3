import Foundation
import Synchronization

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

/// One piece of the image on its way to every target: the buffer goes back to the pool when
/// the last target is done with it.
final class SharedPiece: @unchecked Sendable {
    let offset: Int64
    let bytes: UnsafeRawBufferPointer
    /// Share of the input read when this piece was produced.
    let inputFraction: Double
    private let buffer: UnsafeMutableRawBufferPointer
    private let pool: BufferPool
    private let holders: Mutex<Int>

    init(offset: Int64, count: Int, inputFraction: Double, buffer: UnsafeMutableRawBufferPointer, pool: BufferPool, holders: Int) {
        self.offset = offset
        bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
        self.inputFraction = inputFraction
        self.buffer = buffer
        self.pool = pool
        self.holders = Mutex(holders)
    }

    func release() {
        let left = holders.withLock { count -> Int in
            count -= 1
            return count
        }
        if left == 0 { pool.give(buffer) }
    }
}

/// A first-in first-out queue with a capacity: `put` waits while it is full, `take` while it is
/// empty; nil from `take` once it is closed and drained.
final class BoundedQueue<Element>: @unchecked Sendable {
    private var items: [Element] = []
    private var closed = false
    private let capacity: Int
    private let condition = NSCondition()

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    func put(_ item: Element) {
        condition.lock()
        while items.count >= capacity, !closed { condition.wait() }
        items.append(item)
        condition.broadcast()
        condition.unlock()
    }

    func take() -> Element? {
        condition.lock()
        defer { condition.unlock() }
        while items.isEmpty, !closed { condition.wait() }
        guard !items.isEmpty else { return nil }
        let item = items.removeFirst()
        condition.broadcast()
        return item
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}
