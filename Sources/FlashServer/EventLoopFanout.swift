import FlashEngine
import NIOCore
import Synchronization

/// Hands events to the `/flash-progress` connections of one event loop and writes them, in one
/// task per burst, on that loop.
///
/// The loop's connections are members of one `EventSubscriberGroup`: a job's thread pushes an
/// event into the group's feed once, and the loop passes it on to its connections' queues itself.
/// Waiting `gatherDelay` before that pass lets events published close together (four jobs started
/// by four requests, a job's last progress and its end) leave in one write per client, and lets
/// the loop read the requests that arrived meanwhile before it spends a few milliseconds writing
/// to a thousand sockets.
final class EventLoopFanout: Sendable {
    static let gatherDelay = TimeAmount.milliseconds(1)

    let loop: any EventLoop
    /// The loop's connections subscribe here.
    let group: EventSubscriberGroup
    private let state = Mutex(Waiting())

    private struct Waiting {
        var writers: [ProgressFrameWriter] = []
        var scheduled = false
        /// A pass is handing the feed's events to the members: writers woken now join that pass.
        var delivering = false
    }

    init(loop: any EventLoop, broadcaster: EventBroadcaster) {
        self.loop = loop
        self.group = broadcaster.makeGroup()
        group.setReadyHandler { [weak self] in self?.passSoon() }
    }

    /// Called from any thread when `writer` has events queued.
    func writeSoon(_ writer: ProgressFrameWriter) {
        let schedule = state.withLock { state in
            state.writers.append(writer)
            guard !state.scheduled, !state.delivering else { return false }
            state.scheduled = true
            return true
        }
        if schedule { scheduleTask() }
    }

    /// Called from a publishing thread when the group's feed has events.
    private func passSoon() {
        let schedule = state.withLock { state in
            defer { state.scheduled = true }
            return !state.scheduled
        }
        if schedule { scheduleTask() }
    }

    private func scheduleTask() {
        loop.scheduleTask(in: Self.gatherDelay) { self.pass() }
    }

    private func pass() {
        state.withLock { state in
            state.scheduled = false
            state.delivering = true
        }
        group.deliver()
        let writers = state.withLock { state in
            state.delivering = false
            defer { state.writers.removeAll(keepingCapacity: true) }
            return state.writers
        }
        for writer in writers { writer.drain() }
    }
}

/// One `EventLoopFanout` per event loop, made on first use.
final class EventLoopFanouts: Sendable {
    let broadcaster: EventBroadcaster
    private let fanouts = Mutex<[ObjectIdentifier: EventLoopFanout]>([:])

    init(broadcaster: EventBroadcaster) {
        self.broadcaster = broadcaster
    }

    func fanout(for loop: any EventLoop) -> EventLoopFanout {
        fanouts.withLock { fanouts in
            if let existing = fanouts[ObjectIdentifier(loop)] { return existing }
            let made = EventLoopFanout(loop: loop, broadcaster: broadcaster)
            fanouts[ObjectIdentifier(loop)] = made
            return made
        }
    }
}
