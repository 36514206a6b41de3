@testable import FlashEngine
import Foundation
import Synchronization
import Testing

/// The engine's one concurrency toolkit (`Support/`): what the read-ahead, the decompressing
/// reader and the disk batches rely on.
@Suite struct ConcurrencyToolkitTests {
    /// The names Linux shows for this process's threads.
    private func threadNames() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []).compactMap { task in
            try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    @Test func aBoundedQueueKeepsOrderHoldsAPutterAtCapacityAndEndsWithNilOnceClosedAndDrained() throws {
        let queue = BoundedQueue<Int>(capacity: 2)
        let taken = Mutex<[Int]>([])
        let putter = try WorkerThread.start(name: "putter") {
            for value in 0..<100 { queue.put(value) }
            queue.close()
        }
        let taker = try WorkerThread.start(name: "taker") {
            while let value = queue.take() { taken.withLock { $0.append(value) } }
        }
        putter.join()
        taker.join()
        #expect(taken.withLock { $0 } == Array(0..<100))
        #expect(queue.take() == nil)
    }

    @Test func closingABoundedQueueWakesAPutterWaitingForRoom() throws {
        let queue = BoundedQueue<Int>(capacity: 1)
        queue.put(1)
        let putter = try WorkerThread.start(name: "blocked putter") { queue.put(2) }
        usleep(50_000)
        queue.close()
        putter.join()
        #expect(queue.take() == 1)
    }

    @Test func aBufferPoolHandsOutAlignedBuffersWaitsWhenAllAreOutAndClosingWakesTheTaker() throws {
        let pool = BufferPool(count: 2, bufferSize: 8192)
        let first = pool.take(), second = pool.take()
        #expect(first != nil && second != nil)
        #expect(Int(bitPattern: first?.baseAddress) % 4096 == 0)
        // The address of the buffer the third taker got, once it got one.
        let third = Mutex<Int?>(nil)
        let taker = try WorkerThread.start(name: "taker") {
            let address = Int(bitPattern: pool.take()?.baseAddress)
            third.withLock { $0 = address }
        }
        usleep(50_000)
        #expect(third.withLock { $0 } == nil, "all buffers are out: the taker waits")
        pool.give(first!)
        taker.join()
        #expect(third.withLock { $0 } == Int(bitPattern: first?.baseAddress))
        let gotNothing = Mutex(false)
        let waiting = try WorkerThread.start(name: "waiting taker") {
            let none = pool.take() == nil
            gotNothing.withLock { $0 = none }
        }
        usleep(50_000)
        pool.close()
        waiting.join()
        #expect(gotNothing.withLock { $0 }, "closing the pool wakes the taker with nothing")
    }

    @Test func aWorkerThreadIsNamedAndJoinWaitsUntilItHasEndedLeavingNoThreadBehind() throws {
        let workers = try (0..<10).map { index in
            try WorkerThread.start(name: "toolkit-w\(index)") { usleep(50_000) }
        }
        usleep(10_000)
        // Linux shows the names (other tests run threads of their own meanwhile: only ours count).
        #expect(threadNames().filter { $0.hasPrefix("toolkit-w") }.count == 10)
        workers.forEach { $0.join() }
        workers.forEach { $0.join() }
        #expect(threadNames().filter { $0.hasPrefix("toolkit-w") }.isEmpty, "joined threads are gone")
    }
}
