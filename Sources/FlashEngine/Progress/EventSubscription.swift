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
    private var overflowHandler: (@Sendable () -> Void)?
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

    /// Runs (once, on the publishing thread) when the subscriber overflows; it must be quick.
    public func setOverflowHandler(_ handler: @escaping @Sendable () -> Void) {
        lock.lock()
        let fireNow = overflowed
        if !fireNow { overflowHandler = handler }
        lock.unlock()
        if fireNow { handler() }
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
        let batch = takeAllLocked()
        let onClose = self.onClose
        lock.unlock()
        waiting?.resume(returning: batch)
        onClose?(self)
    }

    func push(_ published: PublishedEvent) {
        let event = published.event
        guard filter.matches(event) else { return }
        lock.lock()
        guard !closed else { lock.unlock(); return }
        if case .progress(let job, _, _) = event, let slot = progressSlot[job.jobId] {
            queue[slot] = nil
            queuedCount -= 1
            coalesced += 1
        }
        if queuedCount >= limit {
            overflowLocked()
            return
        }
        if case .progress(let job, _, _) = event {
            progressSlot[job.jobId] = queue.count
        }
        queue.append(published)
        queuedCount += 1
        if let waiting = waiter {
            waiter = nil
            let batch = takeAllLocked()
            lock.unlock()
            waiting.resume(returning: batch)
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
        let handler = overflowHandler
        overflowHandler = nil
        let onClose = self.onClose
        lock.unlock()
        waiting?.resume(returning: nil)
        handler?()
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
