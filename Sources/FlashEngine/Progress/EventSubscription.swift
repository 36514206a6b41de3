import Foundation
import Synchronization

/// One subscriber's queue of events, bounded so that a slow reader never holds up a job or the
/// other subscribers.
///
/// - A newer `flash_progress` for a job replaces one still queued for it (moved to the end, so
///   it stays behind the lifecycle events queued before it).
/// - Lifecycle events are never dropped or reordered; if `limit` events are queued, the
///   subscriber cannot keep up and is closed (`didOverflow`), and `onOverflow` runs once.
public final class EventSubscription: Sendable {
    public let filter: EventFilter
    private let limit: Int
    private let state = Mutex(State())

    private struct State {
        var queue: [PublishedEvent?] = []
        var queuedCount = 0
        var progressSlot: [String: Int] = [:]
        var waiter: CheckedContinuation<[PublishedEvent]?, Never>?
        var closed = false
        var overflowed = false
        var readyHandler: (@Sendable () -> Void)?
        var onClose: (@Sendable (EventSubscription) -> Void)?
        var coalesced = 0
        var dropped = 0

        mutating func takeAll() -> [PublishedEvent]? {
            guard queuedCount > 0 else { return nil }
            let batch = queue.compactMap { $0 }
            queue.removeAll(keepingCapacity: true)
            queuedCount = 0
            progressSlot.removeAll(keepingCapacity: true)
            return batch
        }
    }

    /// What a change under the lock leaves to do once it is released.
    private struct Wake {
        var waiter: CheckedContinuation<[PublishedEvent]?, Never>?
        var batch: [PublishedEvent]?
        var ready: (@Sendable () -> Void)?
        var onClose: (@Sendable (EventSubscription) -> Void)?
    }

    init(filter: EventFilter, limit: Int) {
        self.filter = filter
        self.limit = max(2, limit)
    }

    /// Told when the subscription closes (the broadcaster forgets it then).
    var onClose: (@Sendable (EventSubscription) -> Void)? {
        get { state.withLock { $0.onClose } }
        set { state.withLock { $0.onClose = newValue } }
    }

    /// True once the subscriber was closed for falling too far behind.
    public var didOverflow: Bool { state.withLock { $0.overflowed } }

    /// Progress messages replaced by newer ones before this subscriber read them.
    public var coalescedCount: Int { state.withLock { $0.coalesced } }

    /// Messages discarded unsent when the subscriber was closed for falling behind.
    public var droppedCount: Int { state.withLock { $0.dropped } }

    /// For a consumer driven by pushes instead of awaiting `nextMessages` (a socket writer on its
    /// event loop): `handler` runs on the delivering thread (see `EventBroadcaster.Delivery`) when
    /// events arrive in an empty queue and when the subscription closes; the consumer then calls
    /// `takeQueued()`. It must be quick.
    public func setReadyHandler(_ handler: @escaping @Sendable () -> Void) {
        let fireNow = state.withLock { state in
            state.readyHandler = handler
            return state.queuedCount > 0 || state.closed
        }
        if fireNow { handler() }
    }

    /// Everything queued (possibly nothing), and whether the subscription has closed: once it
    /// has and the queue is empty, nothing more will come.
    public func takeQueued() -> (messages: [PublishedEvent], isClosed: Bool) {
        state.withLock { ($0.takeAll() ?? [], $0.closed) }
    }

    /// Everything queued, waiting until there is something; nil once closed (after an overflow
    /// at once, otherwise after what was queued has been read). Task cancellation closes it.
    public func nextBatch() async -> [FlashEvent]? {
        await nextMessages()?.map(\.event)
    }

    /// `nextBatch`, with each event's wire form (encoded once for all subscribers).
    public func nextMessages() async -> [PublishedEvent]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[PublishedEvent]?, Never>) in
                let answer: [PublishedEvent]?? = state.withLock { state in
                    if let batch = state.takeAll() { return .some(batch) }
                    if state.closed { return .some(nil) }
                    state.waiter = continuation
                    return .none
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            close()
        }
    }

    /// Stops the subscription; a waiting `nextBatch` returns what is left, then nil.
    public func close() {
        let wake = state.withLock { state -> Wake? in
            guard !state.closed else { return nil }
            state.closed = true
            let waiting = state.waiter
            state.waiter = nil
            // What is queued stays for the reader's next take unless a reader is waiting now.
            return Wake(waiter: waiting, batch: waiting == nil ? nil : state.takeAll(), ready: state.readyHandler, onClose: state.onClose)
        }
        guard let wake else { return }
        wake.waiter?.resume(returning: wake.batch)
        wake.ready?()
        wake.onClose?(self)
    }

    func push(_ published: PublishedEvent) {
        push(contentsOf: CollectionOfOne(published))
    }

    /// Queues several events with one wake-up of the reader, so that events published together
    /// (every job's progress of one tick) reach a socket in one write.
    func push<Events: Collection<PublishedEvent>>(contentsOf events: Events) {
        let wake = state.withLock { state -> Wake? in
            guard !state.closed else { return nil }
            let wasEmpty = state.queuedCount == 0
            var added = false
            for published in events where filter.matches(published.event) {
                if case .progress(let job, _, _) = published.event, let slot = state.progressSlot[job.jobId] {
                    state.queue[slot] = nil
                    state.queuedCount -= 1
                    state.coalesced += 1
                }
                if state.queuedCount >= limit {
                    return overflow(&state)
                }
                if case .progress(let job, _, _) = published.event {
                    state.progressSlot[job.jobId] = state.queue.count
                }
                state.queue.append(published)
                state.queuedCount += 1
                added = true
            }
            guard added else { return nil }
            if let waiting = state.waiter {
                state.waiter = nil
                return Wake(waiter: waiting, batch: state.takeAll())
            }
            return wasEmpty ? Wake(ready: state.readyHandler) : nil
        }
        guard let wake else { return }
        wake.waiter?.resume(returning: wake.batch)
        wake.ready?()
        wake.onClose?(self)
    }

    /// Closes the subscription for falling behind: what was queued is dropped.
    private func overflow(_ state: inout State) -> Wake {
        state.overflowed = true
        state.closed = true
        state.dropped = state.queuedCount + 1
        state.queue.removeAll()
        state.queuedCount = 0
        state.progressSlot.removeAll()
        let waiting = state.waiter
        state.waiter = nil
        return Wake(waiter: waiting, batch: nil, ready: state.readyHandler, onClose: state.onClose)
    }
}

/// An event as it goes out to subscribers: the event and its docs/PROTOCOL.md JSON, made once.
public struct PublishedEvent: Sendable {
    public let event: FlashEvent
    public let json: String?

    init(_ event: FlashEvent) {
        self.event = event
        self.json = event.protocolJSON()
    }
}
