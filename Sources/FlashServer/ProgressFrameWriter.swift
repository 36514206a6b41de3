import FlashEngine
import NIOCore
import NIOWebSocket

/// Writes one connection's events as WebSocket text frames straight onto its channel, on the
/// channel's event loop.
///
/// Everything queued when the loop gets to it goes out with one flush (one `writev`), so a tick's
/// progress for every job costs one system call per client, not one per message; and no task
/// hop is paid per message. The next batch is taken only once the last one has reached the
/// socket, so a client that reads slowly fills its bounded, coalescing `EventSubscription`, never
/// NIO's unbounded buffer, and is cut off there when it cannot keep up.
final class ProgressFrameWriter: @unchecked Sendable {
    /// The subscription overflowed: the client was too slow and is disconnected.
    struct TooSlow: Error {}

    private let channel: any Channel
    private let subscription: EventSubscription
    private let fanout: EventLoopFanout
    private let done: EventLoopPromise<Void>
    // Touched on the channel's event loop only.
    private var writing = false
    private var finished = false

    init(channel: any Channel, subscription: EventSubscription, fanout: EventLoopFanout) {
        precondition(fanout.loop === channel.eventLoop)
        self.channel = channel
        self.subscription = subscription
        self.fanout = fanout
        self.done = channel.eventLoop.makePromise()
    }

    /// Starts writing whatever the subscription queues, on the channel's event loop.
    func start() {
        subscription.setReadyHandler { [self] in fanout.writeSoon(self) }
    }

    /// Waits until the subscription has closed and everything queued was written (success), a
    /// write fails, or the subscription overflows (`TooSlow`). Cancelling stops the writer at once.
    func finished() async throws {
        let loop = channel.eventLoop
        try await withTaskCancellationHandler {
            try await done.futureResult.get()
        } onCancel: {
            loop.execute { self.finish(CancellationError()) }
        }
    }

    /// Writes what is queued unless a write is still on its way; on the channel's event loop.
    func drain() {
        // A client that stopped reading may have a write stuck in NIO: it is cut off all the same.
        if subscription.didOverflow { return finish(TooSlow()) }
        guard !writing, !finished else { return }
        let (messages, isClosed) = subscription.takeQueued()
        let texts = messages.compactMap(\.json)
        guard !texts.isEmpty else {
            if isClosed { finish(subscription.didOverflow ? TooSlow() : nil) }
            return
        }
        writing = true
        let written = channel.eventLoop.makePromise(of: Void.self)
        for (index, text) in texts.enumerated() {
            let frame = WebSocketFrame(fin: true, opcode: .text, data: channel.allocator.buffer(string: text))
            channel.write(frame, promise: index == texts.count - 1 ? written : nil)
        }
        channel.flush()
        written.futureResult.whenComplete { [self] result in
            writing = false
            switch result {
            case .success: drain()
            case .failure(let error): finish(error)
            }
        }
    }

    private func finish(_ error: (any Error)?) {
        guard !finished else { return }
        finished = true
        if let error { done.fail(error) } else { done.succeed() }
    }
}
