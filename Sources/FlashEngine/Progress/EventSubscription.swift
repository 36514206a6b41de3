import Foundation

/// One subscriber's queue of events, bounded so that a slow reader never holds up a job or the
/// other subscribers.
///
/// - A newer `flash_progress` for a job replaces one still queued for it (moved to the end, so
///   it stays behind the lifecycle events queued before it).
/// - Lifecycle events are never dropped or reordered; if `limit` events are queued, the
///   subscriber cannot keep up and is closed (`didOverflow`), and `onOverflow` runs once.
public final class EventSubscription: @unchecked Sendable {
    public let filter: EventFilter
    private let limit: Int
    private let lock = NSLock()
    private var queue: [PublishedEvent?] = []
    private var queuedCount = 0
    private var progressSlot: [String: Int] = [:]
    private var waiter: CheckedContinuation<[PublishedEvent]?, Never>?
    private var closed = false
    private var overflowed = false
    private var readyHandler: (@Sendable () -> Void)?
    private var coalesced = 0
    private var dropped = 0
    var onClose: (@Sendable (EventSubscription) -> Void)?

    init(filter: EventFilter, limit: Int) {
        self.filter = filter
        self.limit = max(2, limit)
    }

    /// True once the subscriber was closed for falling too far behind.
    public var didOverflow: Bool {
        lock.lock()
        defer { lock.unlock() }
        return overflowed
    }

    /// Progress messages replaced by newer ones before this subscriber read them.
    public var coalescedCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return coalesced
    }

    /// Messages discarded unsent when the subscriber was closed for falling behind.
    public var droppedCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return dropped
    }

    /// For a consumer driven by pushes instead of awaiting `nextMessages` (a socket writer on its
    /// event loop): `handler` runs on the delivering thread (see `EventBroadcaster.Delivery`) when
    /// events arrive in an empty queue and when the subscription closes; the consumer then calls
    /// `takeQueued()`. It must be quick.
    public func setReadyHandler(_ handler: @escaping @Sendable () -> Void) {
        lock.lock()
        readyHandler = handler
        let fireNow = queuedCount > 0 || closed
        lock.unlock()
        if fireNow { handler() }
    }

    /// Everything queued (possibly nothing), and whether the subscription has closed: once it
    /// has and the queue is empty, nothing more will come.
    public func takeQueued() -> (messages: [PublishedEvent], isClosed: Bool) {
        lock.lock()
        defer { lock.unlock() }
        return (takeAllLocked() ?? [], closed)
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
                lock.lock()
                if let batch = takeAllLocked() {
                    lock.unlock()
                    continuation.resume(returning: batch)
                } else if closed {
                    lock.unlock()
                    continuation.resume(returning: nil)
                } else {
                    waiter = continuation
                    lock.unlock()
                }
            }
        } onCancel: {
            close()
        }
    }

    /// Stops the subscription; a waiting `nextBatch` returns what is left, then nil.
    public func close() {
        lock.lock()
        guard !closed else { lock.unlock(); return }
        closed = true
        let waiting = waiter
        waiter = nil
        // What is queued stays for the reader's next take unless a reader is waiting now.
        let batch = waiting == nil ? nil : takeAllLocked()
        let onClose = self.onClose
        let ready = readyHandler
        lock.unlock()
        waiting?.resume(returning: batch)
        ready?()
        onClose?(self)
    }

    func push(_ published: PublishedEvent) {
        push(contentsOf: CollectionOfOne(published))
    }

    /// Queues several events with one wake-up of the reader, so that events published together
    /// (every job's progress of one tick) reach a socket in one write.
    func push<Events: Collection<PublishedEvent>>(contentsOf events: Events) {
        lock.lock()
        guard !closed else { lock.unlock(); return }
        let wasEmpty = queuedCount == 0
        var added = false
        for published in events where filter.matches(published.event) {
            if case .progress(let job, _, _) = published.event, let slot = progressSlot[job.jobId] {
                queue[slot] = nil
                queuedCount -= 1
                coalesced += 1
            }
            if queuedCount >= limit {
                overflowLocked()
                return
            }
            if case .progress(let job, _, _) = published.event {
                progressSlot[job.jobId] = queue.count
            }
            queue.append(published)
            queuedCount += 1
            added = true
        }
        guard added else { lock.unlock(); return }
        if let waiting = waiter {
            waiter = nil
            let batch = takeAllLocked()
            lock.unlock()
            waiting.resume(returning: batch)
        } else if wasEmpty, let ready = readyHandler {
            lock.unlock()
            ready()
        } else {
            lock.unlock()
        }
    }

    /// Called with `lock` held; releases it.
    private func overflowLocked() {
        overflowed = true
        closed = true
        dropped = queuedCount + 1
        queue.removeAll()
        queuedCount = 0
        progressSlot.removeAll()
        let waiting = waiter
        waiter = nil
        let onClose = self.onClose
        let ready = readyHandler
        lock.unlock()
        waiting?.resume(returning: nil)
        ready?()
        onClose?(self)
    }

    private func takeAllLocked() -> [PublishedEvent]? {
        guard queuedCount > 0 else { return nil }
        let batch = queue.compactMap { $0 }
        queue.removeAll(keepingCapacity: true)
        queuedCount = 0
        progressSlot.removeAll(keepingCapacity: true)
        return batch
    }
}

/// An event as it goes out to subscribers: the event and its PROTOCOL.md JSON, made once.
public struct PublishedEvent: Sendable {
    public let event: FlashEvent
    public let json: String?

    init(_ event: FlashEvent) {
        self.event = event
        self.json = event.protocolJSON()
    }
}
