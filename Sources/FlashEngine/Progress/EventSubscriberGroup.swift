import Foundation

/// Subscribers that are handed their events by their consumer's thread instead of the publisher's.
///
/// The broadcaster pushes each event once into the group's feed; the consumer (an event loop
/// about to write to its clients' sockets) is told by the ready handler and calls `deliver()`,
/// which passes the events on to every member. So a job's thread hands an event to a few
/// groups instead of to a thousand subscriptions, and never contends for their locks with the
/// threads that empty them.
///
/// Each member is what `EventBroadcaster.subscribe` would give: the replay, then every event
/// once, bounded and coalescing. Exactly once holds because a member remembers the sequence
/// number of the last event its replay covered, and `deliver()` skips the events up to it that
/// were still in the feed when it joined.
public final class EventSubscriberGroup: @unchecked Sendable {
    private let broadcaster: EventBroadcaster
    private let feed: EventSubscription
    private let lock = NSLock()
    private var members: [ObjectIdentifier: Member] = [:]

    private struct Member {
        let subscription: EventSubscription
        /// The last event the replay covered.
        let joinedAfter: UInt64
    }

    init(broadcaster: EventBroadcaster, feed: EventSubscription) {
        self.broadcaster = broadcaster
        self.feed = feed
    }

    /// `handler` runs on the publishing thread when events reach an empty feed, and when the
    /// broadcaster closes it; the consumer then calls `deliver()` on its own thread. Quick only.
    public func setReadyHandler(_ handler: @escaping @Sendable () -> Void) {
        feed.setReadyHandler(handler)
    }

    /// A new member: its replay is queued now, and `deliver()` brings it everything after.
    public func subscribe(_ filter: EventFilter = EventFilter(), limit: Int? = nil) -> EventSubscription {
        let subscription = EventSubscription(filter: filter, limit: limit ?? broadcaster.subscriberLimit)
        subscription.onClose = { [weak self] closed in self?.remove(closed) }
        broadcaster.join(subscription) { lastRecorded in
            lock.lock()
            members[ObjectIdentifier(subscription)] = Member(subscription: subscription, joinedAfter: lastRecorded)
            lock.unlock()
            broadcaster.groupMemberJoinedLocked()
        }
        return subscription
    }

    /// Hands what the feed holds to the members; once the broadcaster has closed the feed, closes
    /// them too (each keeps what was queued for it).
    public func deliver() {
        let (events, isClosed) = feed.takeQueued()
        // Members are read after the events are taken: an event in the feed was recorded after
        // the join of any member it is new to, so that member is in `members` by now.
        lock.lock()
        let current = Array(members.values)
        lock.unlock()
        if let oldest = events.map(\.sequence).min() {
            for member in current {
                if member.joinedAfter < oldest {
                    member.subscription.push(contentsOf: events)
                } else {
                    member.subscription.push(contentsOf: events.filter { $0.sequence > member.joinedAfter })
                }
            }
        }
        if isClosed { current.forEach { $0.subscription.close() } }
    }

    private func remove(_ subscription: EventSubscription) {
        lock.lock()
        let removed = members.removeValue(forKey: ObjectIdentifier(subscription)) != nil
        lock.unlock()
        if removed { broadcaster.groupMemberLeft(overflowed: subscription.didOverflow) }
    }
}
