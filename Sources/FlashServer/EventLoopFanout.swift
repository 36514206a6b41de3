import NIOCore
import Synchronization

/// Collects the `/flash-progress` connections of one event loop that have events waiting, and
/// writes them all in one task a moment later.
///
/// Waiting `gatherDelay` lets events published close together (four jobs started by four
/// requests, a job's last progress and its end) leave in one write per client, and lets the loop
/// read the requests that arrived meanwhile before it spends a few milliseconds writing to a
/// thousand sockets. One scheduled task per loop and burst, instead of one per client.
final class EventLoopFanout: Sendable {
    static let gatherDelay = TimeAmount.milliseconds(1)

    let loop: any EventLoop
    private let state = Mutex(Waiting())

    private struct Waiting {
        var writers: [ProgressFrameWriter] = []
        var scheduled = false
    }

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// Called from any thread when `writer` has events queued.
    func writeSoon(_ writer: ProgressFrameWriter) {
        let schedule = state.withLock { state in
            state.writers.append(writer)
            defer { state.scheduled = true }
            return !state.scheduled
        }
        if schedule {
            loop.scheduleTask(in: Self.gatherDelay) { self.writeWaiting() }
        }
    }

    private func writeWaiting() {
        let writers = state.withLock { state in
            state.scheduled = false
            defer { state.writers.removeAll(keepingCapacity: true) }
            return state.writers
        }
        for writer in writers { writer.drain() }
    }
}

/// One `EventLoopFanout` per event loop, made on first use.
final class EventLoopFanouts: Sendable {
    private let fanouts = Mutex<[ObjectIdentifier: EventLoopFanout]>([:])

    func fanout(for loop: any EventLoop) -> EventLoopFanout {
        fanouts.withLock { fanouts in
            if let existing = fanouts[ObjectIdentifier(loop)] { return existing }
            let made = EventLoopFanout(loop: loop)
            fanouts[ObjectIdentifier(loop)] = made
            return made
        }
    }
}
