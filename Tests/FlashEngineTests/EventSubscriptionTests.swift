@testable import FlashEngine
import Synchronization
import Testing

@Suite struct EventSubscriptionTests {
    let job = JobInfo(jobId: "job_00000001", deviceId: "SER1")
    let other = JobInfo(jobId: "job_00000002", deviceId: "SER2")

    func progress(_ job: JobInfo, _ bytes: Int64) -> FlashEvent {
        .progress(job, ProgressSnapshot(progress: Double(bytes), stage: "Sending boot", bytesTransferred: bytes, totalBytes: 100, transferSpeed: 1, estimatedTimeRemaining: 1), timestamp: bytes)
    }

    @Test func newerProgressReplacesQueuedProgressBehindLifecycle() async {
        let broadcaster = EventBroadcaster()
        let subscription = broadcaster.subscribe()
        broadcaster.publish(.started(job, stage: "Connecting", totalBytes: 100, timestamp: 1))
        broadcaster.publish(progress(job, 10))
        broadcaster.publish(progress(other, 5))
        broadcaster.publish(.paused(job, timestamp: 2))
        broadcaster.publish(.resumed(job, timestamp: 3))
        broadcaster.publish(progress(job, 20))
        let batch = await subscription.nextBatch()
        #expect(batch == [
            .started(job, stage: "Connecting", totalBytes: 100, timestamp: 1),
            progress(other, 5),
            .paused(job, timestamp: 2),
            .resumed(job, timestamp: 3),
            progress(job, 20),
        ])
        #expect(subscription.coalescedCount == 1)
    }

    @Test func aSubscriberThatFallsBehindIsClosedWithoutHoldingOthers() async {
        let broadcaster = EventBroadcaster(subscriberLimit: 4)
        let slow = broadcaster.subscribe()
        let fast = broadcaster.subscribe()
        let wakeUps = Counter()
        slow.setReadyHandler { wakeUps.increment() }
        var received: [FlashEvent] = []
        for index in 0..<10 {
            broadcaster.publish(.paused(job, timestamp: Int64(index)))
            received += await fast.nextBatch() ?? []
        }
        #expect(received.count == 10)
        #expect(slow.didOverflow)
        #expect(slow.droppedCount == 5, "4 queued plus the one that did not fit")
        #expect(wakeUps.value == 2, "woken by the first event, then by the overflow")
        #expect(await slow.nextBatch() == nil)
        #expect(broadcaster.subscriberCount == 1)
        #expect(broadcaster.overflowCount == 1)
    }

    @Test func newSubscribersGetTheReplayOfActiveJobsOnly() async {
        let broadcaster = EventBroadcaster()
        broadcaster.publish(.started(job, stage: "Connecting", totalBytes: 100, timestamp: 1))
        broadcaster.publish(progress(job, 10))
        broadcaster.publish(progress(job, 30))
        broadcaster.publish(.paused(job, timestamp: 2))
        broadcaster.publish(.started(other, stage: "Connecting", totalBytes: 100, timestamp: 3))
        broadcaster.publish(.failed(other, error: "USB connection lost", reason: nil, timestamp: 4))

        let everyone = broadcaster.subscribe()
        #expect(await everyone.nextBatch() == [
            .started(job, stage: "Connecting", totalBytes: 100, timestamp: 1),
            progress(job, 30),
            .paused(job, timestamp: 2),
        ])
        // A client asking for one job that has ended is told how it ended.
        let oneJob = broadcaster.subscribe(EventFilter(jobId: other.jobId))
        #expect(await oneJob.nextBatch() == [
            .started(other, stage: "Connecting", totalBytes: 100, timestamp: 3),
            .failed(other, error: "USB connection lost", reason: nil, timestamp: 4),
        ])
        let byDevice = broadcaster.subscribe(EventFilter(deviceId: "SER1"))
        broadcaster.publish(.resumed(job, timestamp: 5))
        broadcaster.publish(.deviceMessage(job, text: "writing", timestamp: 6))
        #expect(await byDevice.nextBatch()?.last == .resumed(job, timestamp: 5))
    }

    @Test func closingEndsAWaitingReader() async {
        let broadcaster = EventBroadcaster()
        let subscription = broadcaster.subscribe()
        async let next = subscription.nextBatch()
        try? await Task.sleep(for: .milliseconds(50))
        subscription.close()
        #expect(await next == nil)
        #expect(broadcaster.subscriberCount == 0)
    }

    @Test func eventsPublishedTogetherReachAReaderAsOneBatchAndOnce() {
        let broadcaster = EventBroadcaster()
        broadcaster.publish(.started(job, stage: "Connecting", totalBytes: 100, timestamp: 1))
        broadcaster.publish(.started(other, stage: "Connecting", totalBytes: 100, timestamp: 2))
        let subscription = broadcaster.subscribe()
        #expect(subscription.takeQueued().messages.count == 2, "the replay")
        let wakeUps = Counter()
        subscription.setReadyHandler { wakeUps.increment() }
        var late: EventSubscription?
        broadcaster.publishTogether {
            broadcaster.publish(progress(job, 10))
            broadcaster.publish(progress(other, 20))
            late = broadcaster.subscribe()
            #expect(wakeUps.value == 0, "nothing is delivered before the batch is complete")
        }
        #expect(wakeUps.value == 1)
        let taken = subscription.takeQueued()
        #expect(taken.messages.map(\.event) == [progress(job, 10), progress(other, 20)])
        #expect(!taken.isClosed)
        // A subscriber that joined while the batch was gathered sees every event exactly once.
        #expect(late?.takeQueued().messages.map(\.event) == [
            .started(job, stage: "Connecting", totalBytes: 100, timestamp: 1),
            .started(other, stage: "Connecting", totalBytes: 100, timestamp: 2),
            progress(job, 10),
            progress(other, 20),
        ])
    }

    @Test func overlappingBatchesAreDeliveredWhenTheOutermostEnds() {
        let broadcaster = EventBroadcaster()
        let subscription = broadcaster.subscribe()
        broadcaster.publishTogether {
            broadcaster.publish(progress(job, 10))
            broadcaster.publishTogether {
                broadcaster.publish(progress(other, 20))
            }
            #expect(subscription.takeQueued().messages.isEmpty, "the inner batch waits for the outer one")
            broadcaster.publish(.paused(job, timestamp: 3))
        }
        #expect(subscription.takeQueued().messages.map(\.event) == [progress(job, 10), progress(other, 20), .paused(job, timestamp: 3)])
        broadcaster.publish(.resumed(job, timestamp: 4))
        #expect(subscription.takeQueued().messages.map(\.event) == [.resumed(job, timestamp: 4)], "publishing goes back to direct")
    }

    @Test func aPushReaderIsWokenOnceUntilItTakesAndKeepsWhatWasQueuedAtClose() {
        let broadcaster = EventBroadcaster()
        let subscription = broadcaster.subscribe()
        let wakeUps = Counter()
        subscription.setReadyHandler { wakeUps.increment() }
        #expect(wakeUps.value == 0)
        broadcaster.publish(.paused(job, timestamp: 1))
        broadcaster.publish(.resumed(job, timestamp: 2))
        #expect(wakeUps.value == 1, "a second event in a queue not yet read wakes no one")
        #expect(subscription.takeQueued().messages.count == 2)
        broadcaster.publish(progress(job, 30))
        #expect(wakeUps.value == 2)
        subscription.close()
        #expect(wakeUps.value == 3, "closing wakes the reader")
        let last = subscription.takeQueued()
        #expect(last.messages.map(\.event) == [progress(job, 30)])
        #expect(last.isClosed)
        #expect(subscription.takeQueued().messages.isEmpty)
    }

    @Test func aPushReaderThatFallsBehindIsWokenToFindItClosed() {
        let broadcaster = EventBroadcaster(subscriberLimit: 2)
        let subscription = broadcaster.subscribe()
        let wakeUps = Counter()
        subscription.setReadyHandler { wakeUps.increment() }
        for index in 0..<3 {
            broadcaster.publish(.paused(job, timestamp: Int64(index)))
        }
        #expect(wakeUps.value == 2, "the first event, then the overflow")
        let taken = subscription.takeQueued()
        #expect(taken.messages.isEmpty)
        #expect(taken.isClosed)
        #expect(subscription.didOverflow)
    }

    @Test func tokenBucketMakesTakersWaitForTheirShare() {
        let clock = ManualClock()
        let bucket = TokenBucket(bytesPerSecond: 1000, clock: clock)
        #expect(bucket.take(250) == 0)           // the initial quarter-second burst
        #expect(bucket.take(500) == 0.5)          // 500 bytes of debt at 1000 B/s
        clock.advance(ms: 500)
        #expect(bucket.take(100) == 0.1)
        clock.advance(ms: 10_000)                // idle time refills at most a quarter second
        #expect(bucket.take(250) == 0)
        #expect(bucket.take(1) > 0)
    }
}

final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
