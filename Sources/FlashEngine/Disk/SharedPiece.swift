import Foundation
import Synchronization

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
