@testable import FlashEngine
import Testing

/// Members of an `EventSubscriberGroup` get what a direct subscriber gets (replay, then every
/// event once), but only when the group's consumer calls `deliver()`.
@Suite struct EventSubscriberGroupTests {
    let job = JobInfo(jobId: "job_00000001", deviceId: "SER1")
    let other = JobInfo(jobId: "job_00000002", deviceId: "SER2")

    var started: FlashEvent { .started(job, stage: "Connecting", totalBytes: 100, timestamp: 1) }

    @Test func publishingTouchesTheGroupOnceAndMembersOnlyWhenItDelivers() {
        let broadcaster = EventBroadcaster()
        let group = broadcaster.makeGroup()
        let groupWakeUps = Counter()
        group.setReadyHandler { groupWakeUps.increment() }
        let members = (0..<3).map { _ in group.subscribe() }
        let memberWakeUps = Counter()
        members.forEach { $0.setReadyHandler { memberWakeUps.increment() } }

        broadcaster.publish(started)
        broadcaster.publish(.paused(job, timestamp: 2))
        #expect(groupWakeUps.value == 1, "one wake-up for the group until it delivers")
        #expect(memberWakeUps.value == 0, "the publisher hands nothing to the members")
        #expect(members.allSatisfy { $0.takeQueued().messages.isEmpty })

        group.deliver()
        #expect(memberWakeUps.value == 3)
        for member in members {
            #expect(member.takeQueued().messages.map(\.event) == [started, .paused(job, timestamp: 2)])
        }
        #expect(broadcaster.subscriberCount == 3, "members count, the group's feed does not")
    }

    @Test func aMemberJoiningWhileEventsWaitInTheFeedGetsEachEventOnce() {
        let broadcaster = EventBroadcaster()
        let group = broadcaster.makeGroup()
        let early = group.subscribe()
        broadcaster.publish(started)
        broadcaster.publish(.paused(job, timestamp: 2))
        // Not delivered yet: the late member's replay already covers both.
        let late = group.subscribe()
        broadcaster.publish(.resumed(job, timestamp: 3))
        group.deliver()

        let expected: [FlashEvent] = [started, .paused(job, timestamp: 2), .resumed(job, timestamp: 3)]
        #expect(early.takeQueued().messages.map(\.event) == expected)
        #expect(late.takeQueued().messages.map(\.event) == expected)
    }

    @Test func eachMemberCoalescesProgressAndCountsIt() {
        let broadcaster = EventBroadcaster()
        let group = broadcaster.makeGroup()
        let members = [group.subscribe(), group.subscribe()]
        broadcaster.publish(started)
        broadcaster.publish(progress(10))
        broadcaster.publish(progress(20))
        group.deliver()
        for member in members {
            #expect(member.takeQueued().messages.map(\.event) == [started, progress(20)])
            #expect(member.coalescedCount == 1, "what a client never got is counted for that client")
        }
    }

    func progress(_ bytes: Int64) -> FlashEvent {
        .progress(job, ProgressSnapshot(progress: Double(bytes), stage: "Sending boot", bytesTransferred: bytes, totalBytes: 100, transferSpeed: 1, estimatedTimeRemaining: 1), timestamp: bytes)
    }

    @Test func membersKeepTheirOwnFiltersAndLimits() {
        let broadcaster = EventBroadcaster(subscriberLimit: 2)
        let group = broadcaster.makeGroup()
        let onlyOther = group.subscribe(EventFilter(jobId: other.jobId), limit: 10)
        let small = group.subscribe()
        broadcaster.publish(started)
        broadcaster.publish(.started(other, stage: "Connecting", totalBytes: 100, timestamp: 2))
        broadcaster.publish(.paused(job, timestamp: 3))
        group.deliver()

        #expect(onlyOther.takeQueued().messages.map(\.event) == [.started(other, stage: "Connecting", totalBytes: 100, timestamp: 2)])
        #expect(small.didOverflow, "three lifecycle events in a queue of two")
        #expect(broadcaster.overflowCount == 1)
        #expect(broadcaster.subscriberCount == 1)
    }

    @Test func closingTheBroadcasterClosesMembersAfterTheyGetWhatWasPublished() {
        let broadcaster = EventBroadcaster()
        let group = broadcaster.makeGroup()
        let member = group.subscribe()
        broadcaster.publish(started)
        broadcaster.closeAll()
        #expect(!member.takeQueued().isClosed, "closed by the group's consumer, not the publisher")
        group.deliver()
        let last = member.takeQueued()
        #expect(last.messages.map(\.event) == [started])
        #expect(last.isClosed)
    }
}
