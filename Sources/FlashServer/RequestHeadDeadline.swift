import HummingbirdCore
import Logging
import NIOCore

/// Closes a new connection whose first request head has not fully arrived within `seconds`.
///
/// Hummingbird closes connections left idle between requests (`idleTimeout`), but a connection
/// that may still be upgraded to a WebSocket gets its HTTP handlers only once its first head is
/// complete: before that, a client that sends half a request line, or nothing, would hold the
/// connection (and a file descriptor) for ever. This wraps the child channel and watches the raw
/// bytes for the end of that first head.
struct RequestHeadDeadline<Inner: ServerChildChannel>: ServerChildChannel {
    typealias Value = Inner.Value

    let inner: Inner
    let seconds: Double

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(FirstHeadDeadlineHandler(seconds: seconds))
        }.flatMap {
            inner.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// Watches inbound bytes for the blank line that ends the first request head; closes the
/// connection if it has not come by the deadline, and steps aside once it has.
private final class FirstHeadDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let seconds: Double
    private var deadline: Scheduled<Void>?
    /// The last bytes seen, so a "\r\n\r\n" split across reads is found.
    private var tail: [UInt8] = []
    private var headComplete = false

    init(seconds: Double) {
        self.seconds = seconds
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loop = context.eventLoop.assumeIsolated()
        let channel = context.channel
        deadline = loop.scheduleTask(in: .nanoseconds(Int64(seconds * 1e9))) {
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !headComplete {
            let bytes = unwrapInboundIn(data)
            tail += bytes.readableBytesView.suffix(4096)
            if tail.count > 4096 { tail.removeFirst(tail.count - 4096) }
            let end: [UInt8] = [13, 10, 13, 10]
            if tail.count >= 4, (0...(tail.count - 4)).contains(where: { Array(tail[$0..<($0 + 4)]) == end }) {
                headComplete = true
                deadline?.cancel()
                deadline = nil
                context.fireChannelRead(data)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            }
        }
        context.fireChannelRead(data)
    }
}
