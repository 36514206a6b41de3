@testable import FlashEngine
import Foundation
import Synchronization
import Testing

/// `EventBroadcaster(delivery: .background)`, as the server uses it: events reach subscribers
/// from the broadcaster's own thread, in order, each exactly once, and none is lost at close.
@Suite struct EventDeliveryTests {
    let job = JobInfo(jobId: "job_0000000a", deviceId: "SER1")

    @Test func subscribersAreHandedEventsByAnotherThreadThanThePublisher() async {
        let broadcaster = EventBroadcaster(delivery: .background)
        let subscription = broadcaster.subscribe()
        let deliveredOn = Mutex<pthread_t?>(nil)
        subscription.setReadyHandler { deliveredOn.withLock { $0 = pthread_self() } }
        let publisher = Mutex<pthread_t?>(nil)
        let published = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            publisher.withLock { $0 = pthread_self() }
            broadcaster.publish(.started(self.job, stage: "Connecting", totalBytes: 10, timestamp: 1))
            published.signal()
        }
        published.wait()
        broadcaster.flush()
        #expect(await subscription.nextBatch() == [.started(job, stage: "Connecting", totalBytes: 10, timestamp: 1)])
        let threads = (deliveredOn.withLock { $0 }, publisher.withLock { $0 })
        #expect(threads.0 != nil)
        #expect(threads.0.map { pthread_equal($0, threads.1!) == 0 } == true, "the publishing thread handed the event over itself")
    }

    /// A job's pauses are lifecycle events (never coalesced), numbered by their timestamps; the
    /// replay carries the latest. Subscribers join while another thread publishes: each must see
    /// the numbers from its replay's on, with no gap and no repeat.
    @Test func subscribersJoiningWhileEventsFlowSeeEachExactlyOnceInOrder() async {
        let count = 3000
        let broadcaster = EventBroadcaster(subscriberLimit: count + 10, delivery: .background)
        broadcaster.publish(.started(job, stage: "Sending", totalBytes: 10, timestamp: 0))
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            for index in 1...count { broadcaster.publish(.paused(self.job, timestamp: Int64(index))) }
            broadcaster.publish(.completed(self.job, summary: JobSummary(bytes: 10, durationMs: 1, averageSpeed: 10_000), timestamp: Int64(count + 1)))
            done.signal()
        }
        var subscriptions: [EventSubscription] = []
        for _ in 0..<40 {
            subscriptions.append(broadcaster.subscribe())
            usleep(50)
        }
        done.wait()
        broadcaster.flush()
        for subscription in subscriptions {
            var events: [FlashEvent] = []
            while !(events.last?.isTerminal ?? false), let batch = await subscription.nextBatch() {
                events += batch
            }
            let pauses = events.compactMap { event -> Int64? in
                if case .paused(_, let timestamp) = event { timestamp } else { nil }
            }
            if case .completed = events.last {} else { Issue.record("no flash_completed: \(events.suffix(3))") }
            let breaks = zip(pauses, pauses.dropFirst()).filter { $1 != $0 + 1 }
            #expect(breaks.isEmpty, "a gap or a repeat: \(breaks.prefix(3)) (first \(pauses.first ?? -1))")
            #expect(pauses.last ?? Int64(count) == Int64(count), "the pauses stop at \(pauses.last ?? -1) of \(count)")
        }
    }

    @Test func closingAllHandsOverWhatWasPublishedFirst() async {
        let pauses = 2000
        let broadcaster = EventBroadcaster(subscriberLimit: pauses + 10, delivery: .background)
        // Holds the delivery thread for 50 ms at the first event, so that most events are still
        // to be handed over when closeAll comes.
        let held = Mutex(false)
        broadcaster.subscribe().setReadyHandler {
            let first = held.withLock { wasHeld in
                defer { wasHeld = true }
                return !wasHeld
            }
            if first { usleep(50_000) }
        }
        let subscription = broadcaster.subscribe()
        let started = FlashEvent.started(job, stage: "Connecting", totalBytes: 10, timestamp: 0)
        let ended = FlashEvent.failed(job, error: "Flash cancelled: the server is stopping", reason: "cancelled", timestamp: Int64(pauses + 1))
        broadcaster.publish(started)
        for index in 1...pauses { broadcaster.publish(.paused(job, timestamp: Int64(index))) }
        broadcaster.publish(ended)
        broadcaster.closeAll()
        var events: [FlashEvent] = []
        while let batch = await subscription.nextBatch() { events += batch }
        #expect(events.count == pauses + 2, "events lost at close")
        #expect(events.first == started)
        #expect(events.last == ended)
    }
}
