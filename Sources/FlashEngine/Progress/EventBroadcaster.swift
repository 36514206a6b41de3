import Foundation

/// Fans every job's events out to any number of subscribers (WebSocket clients, NDJSON streams,
/// the history recorder), and keeps what a new subscriber must be sent first.
///
/// `subscribe` queues the replay of docs/PROTOCOL.md (each active job's `flash_started`, its latest
/// `flash_progress`, then `flash_paused` if it is paused) and registers the subscriber under the
/// same lock under which each event is recorded for that replay and its receivers are chosen, so
/// a subscriber sees every event exactly once.
/// A subscriber that asks for one job that has already ended is told how it ended (its
/// `flash_started`, last `flash_progress` and `flash_completed` or `flash_failed`).
/// Publishing never waits for a subscriber: each has its own bounded `EventSubscription`.
public final class EventBroadcaster: @unchecked Sendable {
    /// Queued events at which a subscriber is closed as too slow.
    public let subscriberLimit: Int
    /// Guards everything below; `.background` delivery also waits on it for `flush`.
    private let lock = NSCondition()
    private var subscribers: [ObjectIdentifier: EventSubscription] = [:]
    private var active: [String: JobReplay] = [:]
    private var activeOrder: [String] = []
    /// Jobs waiting to start, for subscribers that asked for `flash_queued`.
    private var queued: [(jobId: String, event: PublishedEvent)] = []
    /// How recently finished jobs ended, for subscribers that ask for one job by id.
    private var finished: [String: [PublishedEvent]] = [:]
    private var finishedOrder: [String] = []
    private let finishedKept = 256
    private var overflowed = 0
    /// Events published while `publishTogether` runs, pushed to subscribers when the last
    /// running one returns.
    private var gathered: [PublishedEvent]?
    private var gathering = 0

    /// Where events are handed to the subscribers.
    public enum Delivery: Sendable {
        /// By the thread that publishes, before `publish` returns (one subscriber, or a few).
        case onPublishingThread
        /// By a thread of the broadcaster's own, in the order published. For a server with many
        /// subscribers: handing an event to a thousand of them takes a millisecond or more, which
        /// a job's thread would otherwise spend at its start and end while its device waits for
        /// the next command. Events published while the thread is busy go out together.
        case background
    }

    /// Wakes the delivery thread (`.background` only), once per `draining` turned true; closed
    /// when the broadcaster goes, which ends the thread. Set in `init` only.
    private var deliveryWake: BoundedQueue<Void>?
    /// Published, not yet recorded or handed over (`.background` only).
    private var pending: [PublishedEvent] = []
    private var draining = false

    public init(subscriberLimit: Int = 1024, delivery: Delivery = .onPublishingThread) {
        self.subscriberLimit = subscriberLimit
        switch delivery {
        case .onPublishingThread:
            deliveryWake = nil
        case .background:
            let wake = BoundedQueue<Void>(capacity: 1)
            deliveryWake = wake
            // It wakes at the busiest moments (jobs starting and ending) with work that others wait for.
            // With no thread to be had, events are delivered on the publishing thread instead.
            let started = try? WorkerThread.start(name: "event-delivery", responsive: true) { [weak self] in
                while wake.take() != nil {
                    guard let self else { return }
                    self.drain()
                }
            }
            if started == nil { deliveryWake = nil }
        }
    }

    deinit {
        deliveryWake?.close()
    }

    public func publish(_ event: FlashEvent) {
        let published = PublishedEvent(event)
        lock.lock()
        if gathered != nil {
            gathered?.append(published)
            lock.unlock()
            return
        }
        deliverLocked([published])
    }

    /// Runs `body` and delivers everything published meanwhile (from any thread, in order) as one
    /// batch per subscriber: a client then gets every job's progress of a tick in one write
    /// instead of one write per job. Events are recorded for the replay only when delivered, so
    /// a subscriber that joins meanwhile sees each event exactly once. Calls that overlap (nested,
    /// or from several threads) deliver together when the last one returns.
    public func publishTogether(_ body: () -> Void) {
        lock.lock()
        gathering += 1
        if gathered == nil { gathered = [] }
        lock.unlock()
        body()
        lock.lock()
        gathering -= 1
        guard gathering == 0 else { lock.unlock(); return }
        let batch = gathered ?? []
        gathered = nil
        guard !batch.isEmpty else { lock.unlock(); return }
        deliverLocked(batch)
    }

    /// Waits until every event published so far has been handed to the subscribers.
    public func flush() {
        lock.lock()
        while draining { lock.wait() }
        lock.unlock()
    }

    /// Records `batch` for the replay and hands it to every subscriber, or queues it for the
    /// delivery thread. Called with `lock` held, which it releases: taking a batch and queueing it
    /// happen under one hold, so batches from different threads keep the order they were taken in.
    private func deliverLocked(_ batch: [PublishedEvent]) {
        guard let deliveryWake else {
            batch.forEach(record)
            let receivers = Array(subscribers.values)
            lock.unlock()
            Self.push(batch, to: receivers)
            return
        }
        pending.append(contentsOf: batch)
        let wake = !draining
        draining = true
        lock.unlock()
        if wake { deliveryWake.put(()) }
    }

    /// The delivery thread: hands over everything pending, then what came meanwhile, until none is left.
    private func drain() {
        lock.lock()
        while !pending.isEmpty {
            let batch = pending
            pending = []
            batch.forEach(record)
            let receivers = Array(subscribers.values)
            lock.unlock()
            Self.push(batch, to: receivers)
            lock.lock()
        }
        draining = false
        lock.broadcast()
        lock.unlock()
    }

    private static func push(_ batch: [PublishedEvent], to receivers: [EventSubscription]) {
        if batch.count == 1 {
            for subscriber in receivers { subscriber.push(batch[0]) }
        } else {
            for subscriber in receivers { subscriber.push(contentsOf: batch) }
        }
    }

    public func subscribe(_ filter: EventFilter = EventFilter(), limit: Int? = nil) -> EventSubscription {
        let subscription = EventSubscription(filter: filter, limit: limit ?? subscriberLimit)
        subscription.onClose = { [weak self] closed in self?.remove(closed) }
        lock.lock()
        subscription.push(contentsOf: activeOrder.flatMap { active[$0]?.events ?? [] } + queued.map(\.event))
        if let jobId = filter.jobId {
            subscription.push(contentsOf: finished[jobId] ?? [])
        }
        subscribers[ObjectIdentifier(subscription)] = subscription
        lock.unlock()
        return subscription
    }

    /// Ends every subscription (each still gets what was queued for it), for a server that stops.
    public func closeAll() {
        flush()
        lock.lock()
        let all = Array(subscribers.values)
        lock.unlock()
        all.forEach { $0.close() }
    }

    /// The replay of every active job, in the order the jobs started.
    public func replay() -> [FlashEvent] {
        lock.lock()
        defer { lock.unlock() }
        return activeOrder.flatMap { active[$0]?.events ?? [] }.map(\.event)
    }

    public var subscriberCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return subscribers.count
    }

    /// Subscribers closed so far for not keeping up.
    public var overflowCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return overflowed
    }

    private func remove(_ subscription: EventSubscription) {
        lock.lock()
        if subscribers.removeValue(forKey: ObjectIdentifier(subscription)) != nil, subscription.didOverflow {
            overflowed += 1
        }
        lock.unlock()
    }

    private func record(_ published: PublishedEvent) {
        let event = published.event
        let jobId = event.job.jobId
        if case .queued = event {
            queued.append((jobId, published))
            return
        }
        if event.isLifecycle, !queued.isEmpty { queued.removeAll { $0.jobId == jobId } }
        switch event {
        case .queued:
            break
        case .started:
            if active[jobId] == nil { activeOrder.append(jobId) }
            active[jobId] = JobReplay(started: published)
        case .progress:
            active[jobId]?.progress = published
        case .paused:
            active[jobId]?.paused = published
        case .resumed:
            active[jobId]?.paused = nil
        case .completed, .failed:
            let ended = active.removeValue(forKey: jobId)
            activeOrder.removeAll { $0 == jobId }
            let started = ended?.started
            finished[jobId] = [started, ended?.progress, published].compactMap { $0 }
            finishedOrder.append(jobId)
            if finishedOrder.count > finishedKept {
                finished.removeValue(forKey: finishedOrder.removeFirst())
            }
        case .deviceMessage:
            break
        }
    }
}

private struct JobReplay {
    var started: PublishedEvent
    var progress: PublishedEvent?
    var paused: PublishedEvent?

    var events: [PublishedEvent] {
        [started] + [progress, paused].compactMap { $0 }
    }
}
