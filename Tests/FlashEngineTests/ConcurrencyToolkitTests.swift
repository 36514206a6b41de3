@testable import FlashEngine
import Foundation
import Synchronization
import Testing

/// The engine's one concurrency toolkit (`Support/`): what the read-ahead, the decompressing
/// reader and the disk batches rely on.
@Suite struct ConcurrencyToolkitTests {
    private func threadCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
    }

    @Test func aBoundedQueueKeepsOrderHoldsAPutterAtCapacityAndEndsWithNilOnceClosedAndDrained() {
        let queue = BoundedQueue<Int>(capacity: 2)
        let taken = Mutex<[Int]>([])
        let putter = WorkerThread.start(name: "putter") {
            for value in 0..<100 { queue.put(value) }
            queue.close()
        }
        let taker = WorkerThread.start(name: "taker") {
            while let value = queue.take() { taken.withLock { $0.append(value) } }
        }
        putter.join()
        taker.join()
        #expect(taken.withLock { $0 } == Array(0..<100))
        #expect(queue.take() == nil)
    }

    @Test func closingABoundedQueueWakesAPutterWaitingForRoom() {
        let queue = BoundedQueue<Int>(capacity: 1)
        queue.put(1)
        let putter = WorkerThread.start(name: "blocked putter") { queue.put(2) }
        usleep(50_000)
        queue.close()
        putter.join()
        #expect(queue.take() == 1)
    }

    @Test func aBufferPoolHandsOutAlignedBuffersWaitsWhenAllAreOutAndClosingWakesTheTaker() {
        let pool = BufferPool(count: 2, bufferSize: 8192)
        let first = pool.take(), second = pool.take()
        #expect(first != nil && second != nil)
        #expect(Int(bitPattern: first?.baseAddress) % 4096 == 0)
        // The address of the buffer the third taker got, once it got one.
        let third = Mutex<Int?>(nil)
        let taker = WorkerThread.start(name: "taker") {
            let address = Int(bitPattern: pool.take()?.baseAddress)
            third.withLock { $0 = address }
        }
        usleep(50_000)
        #expect(third.withLock { $0 } == nil, "all buffers are out: the taker waits")
        pool.give(first!)
        taker.join()
        #expect(third.withLock { $0 } == Int(bitPattern: first?.baseAddress))
        let gotNothing = Mutex(false)
        let waiting = WorkerThread.start(name: "waiting taker") {
            let none = pool.take() == nil
            gotNothing.withLock { $0 = none }
        }
        usleep(50_000)
        pool.close()
        waiting.join()
        #expect(gotNothing.withLock { $0 }, "closing the pool wakes the taker with nothing")
    }

    @Test func aWorkerThreadIsNamedAndJoinWaitsUntilItHasEndedLeavingNoThreadBehind() {
        let before = threadCount()
        let name = Mutex<String?>(nil)
        let workers = (0..<10).map { index in
            WorkerThread.start(name: "worker \(index)") {
                usleep(20_000)
                name.withLock { $0 = Thread.current.name }
            }
        }
        workers.forEach { $0.join() }
        workers.forEach { $0.join() }
        #expect(name.withLock { $0 }?.hasPrefix("worker ") == true)
        #expect(threadCount() <= before, "joined threads are gone")
    }
}
