import FlashEngine
import NIOCore
import NIOWebSocket

/// Writes one connection's events as WebSocket text frames straight onto its channel, on the
/// channel's event loop.
///
/// Everything queued when the loop gets to it goes out with one flush (one `writev`), so a tick's
/// progress for every job costs one system call per client, not one per message; and no task
/// hop is paid per message. The frames are encoded here, into one buffer per batch, and written
/// just below NIO's frame encoder: that skips, for every message, a frame value, a trip through
/// the pipeline and the two buffers (header, then text) the encoder hands on. Without that
/// encoder in the pipeline (a test channel), frames are written as `WebSocketFrame`s.
///
/// The next batch is taken only once the last one has reached the socket, so a client that reads
/// slowly fills its bounded, coalescing `EventSubscription`, never NIO's unbounded buffer, and is
/// cut off there when it cannot keep up.
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
    /// The frame encoder's context, looked up on the first write; nil inside: not in the pipeline.
    private var belowEncoder: ChannelHandlerContext??

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
        if let encoder = frameEncoderContext() {
            var frames = channel.allocator.buffer(capacity: texts.reduce(0) { $0 + ByteBuffer.textFrameHeaderRoom + $1.utf8.count })
            for text in texts { frames.writeTextFrame(text) }
            // A context's write goes on to the handler before it, towards the socket.
            encoder.writeAndFlush(NIOAny(frames), promise: written)
        } else {
            for (index, text) in texts.enumerated() {
                let frame = WebSocketFrame(fin: true, opcode: .text, data: channel.allocator.buffer(string: text))
                channel.write(frame, promise: index == texts.count - 1 ? written : nil)
            }
            channel.flush()
        }
        written.futureResult.whenComplete { [self] result in
            writing = false
            switch result {
            case .success: drain()
            case .failure(let error): finish(error)
            }
        }
    }

    private func frameEncoderContext() -> ChannelHandlerContext? {
        if let known = belowEncoder { return known }
        let found = try? channel.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        belowEncoder = .some(found)
        return found
    }

    private func finish(_ error: (any Error)?) {
        guard !finished else { return }
        finished = true
        if let error { done.fail(error) } else { done.succeed() }
    }
}

extension ByteBuffer {
    /// The most a server's frame header takes: no mask, and a 64-bit length at most.
    static let textFrameHeaderRoom = 10

    /// Appends `text` as one final, unmasked text frame (RFC 6455, 5.2), as a server sends it.
    mutating func writeTextFrame(_ text: String) {
        let length = text.utf8.count
        writeInteger(UInt8(0x81))  // FIN, opcode 1 (text)
        switch length {
        case ..<126:
            writeInteger(UInt8(length))
        case ...0xFFFF:
            writeInteger(UInt8(126))
            writeInteger(UInt16(length))
        default:
            writeInteger(UInt8(127))
            writeInteger(UInt64(length))
        }
        writeString(text)
    }
}
