import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTPTypes

/// `HTTP1WebSocketUpgradeChannel`, with WebSocket upgrades also on a keep-alive connection that
/// has already served plain requests.
///
/// NIO's upgrade handler only looks at a connection's first request, and for a later upgrade
/// request HummingbirdWebSocket answers 307 and closes. Here such a request is kept from the HTTP
/// handlers, and once the requests before it are answered the connection is handed to a fresh
/// upgrade pipeline set up by the same `HTTP1WebSocketUpgradeChannel`, which reads the request
/// again: the handshake, the route with its middleware, and the WebSocket settings are those of
/// a new connection.
///
/// The old HTTP handlers cannot leave the pipeline (NIOAsyncChannel's handler is not removable),
/// so the new ones are added after them and the bytes go around them: `ConnectionFront`, at the
/// front, gives what is read to `SegmentEntry`, before the new handlers, which gives what they
/// write back to the front.
struct KeepAliveUpgradeChannel: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        let first: HTTP1WebSocketUpgradeChannel.Value
        /// One for each later upgrade request.
        let later: AsyncStream<HTTP1WebSocketUpgradeChannel.Value>
        var channel: any Channel { first.channel }
    }

    private let inner: HTTP1WebSocketUpgradeChannel

    init<WSResponder: HTTPResponder>(
        responder: @escaping HTTPChannelHandler.Responder, webSocketResponder: WSResponder, configuration: HTTP1WebSocketUpgradeChannel.Configuration
    ) where WSResponder.Context: WebSocketRequestContext {
        var http1 = configuration.http1
        let additional = http1.additionalChannelHandlers
        http1.additionalChannelHandlers = { additional() + [LaterUpgradeDetector()] }
        inner = HTTP1WebSocketUpgradeChannel(
            responder: responder, webSocketResponder: webSocketResponder, configuration: .init(http1: http1, ws: configuration.ws))
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let inner = self.inner
        let (later, segments) = AsyncStream.makeStream(of: HTTP1WebSocketUpgradeChannel.Value.self)
        channel.closeFuture.whenComplete { _ in segments.finish() }
        let front = ConnectionFront { channel in
            inner.setup(channel: channel, logger: logger).whenComplete { result in
                switch result {
                case .success(let value): segments.yield(value)
                case .failure: channel.close(promise: nil)
                }
            }
        }
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(front)
        }.flatMap {
            inner.setup(channel: channel, logger: logger)
        }.map {
            Value(first: $0, later: later)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await withDiscardingTaskGroup { group in
            group.addTask { await inner.handle(value: value.first, logger: logger) }
            for await segment in value.later {
                group.addTask { await inner.handle(value: segment, logger: logger) }
            }
        }
    }
}

/// First in the connection's pipeline (after TLS): passes what is read on, or once the
/// connection is handed over, to the newest `SegmentEntry`.
private final class ConnectionFront: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    /// Sets up a fresh upgrade pipeline at the end of the channel's.
    private let setUpSegment: (any Channel) -> Void
    private var context: ChannelHandlerContext?
    private var entry: SegmentEntry?

    init(setUpSegment: @escaping (any Channel) -> Void) {
        self.setUpSegment = setUpSegment
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let entry {
            entry.deliver(data)
        } else {
            context.fireChannelRead(data)
        }
    }

    /// From now on the connection's bytes go to and come from a new pipeline, which reads
    /// `request` first.
    func handOver(request: ByteBuffer) throws {
        guard let context else { throw ChannelError.ioOnClosedChannel }
        let entry = SegmentEntry(front: self)
        try context.pipeline.syncOperations.addHandler(entry)
        setUpSegment(context.channel)
        self.entry = entry
        entry.deliver(NIOAny(request))
        entry.deliverReadComplete()
    }

    func write(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard let context else { return promise?.fail(ChannelError.ioOnClosedChannel) ?? () }
        context.write(data, promise: promise)
    }

    func flush() {
        context?.flush()
    }

    func read() {
        context?.read()
    }

    func close(mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard let context else { return promise?.fail(ChannelError.alreadyClosed) ?? () }
        context.close(mode: mode, promise: promise)
    }
}

/// Where a handed-over connection's pipeline begins: reads come from the front, and everything
/// its handlers send toward the socket goes straight to the front.
private final class SegmentEntry: ChannelDuplexHandler {
    typealias InboundIn = Never
    typealias OutboundIn = Never

    private let front: ConnectionFront
    private var context: ChannelHandlerContext?

    init(front: ConnectionFront) {
        self.front = front
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func deliver(_ data: NIOAny) {
        context?.fireChannelRead(data)
    }

    func deliverReadComplete() {
        context?.fireChannelReadComplete()
    }

    /// The old HTTP handlers' NIOAsyncChannel passes on what it reads: none of it is for here.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        front.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        front.flush()
    }

    func read(context: ChannelHandlerContext) {
        front.read()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        front.close(mode: mode, promise: promise)
    }
}

/// Among the HTTP handlers: keeps a WebSocket upgrade request from the HTTP loop, and hands the
/// connection over once every request before it has been answered.
private final class LaterUpgradeDetector: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Requests passed on whose response has not ended yet.
    private var unanswered = 0
    /// A request passed on asked to close the connection after its response.
    private var closing = false
    private var upgrade: HTTPRequest?
    private var upgradeRead = false
    private var handedOver = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if upgrade == nil, !closing, !handedOver, case .head(let request) = part, Self.asksForWebSocket(request) {
            upgrade = request
            return
        }
        if upgrade != nil {
            // The upgrade request's end (and body, which means nothing to an upgrade).
            if case .end = part {
                upgradeRead = true
                handOverIfAnswered(context: context)
            }
            return
        }
        if case .head(let request) = part {
            unanswered += 1
            closing = closing || request.headerFields[values: .connection].contains { $0.lowercased() == "close" }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            unanswered -= 1
        }
        context.write(data, promise: promise)
        handOverIfAnswered(context: context)
    }

    /// Once handed over, the output belongs to the new pipeline: the HTTP loop's half-close when
    /// its input ends must not cut the WebSocket's close frame off.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if handedOver, mode == .output {
            promise?.succeed()
            return
        }
        context.close(mode: mode, promise: promise)
    }

    private func handOverIfAnswered(context: ChannelHandlerContext) {
        guard let upgrade, upgradeRead, unanswered == 0, !handedOver else { return }
        handedOver = true
        do {
            let pipeline = context.pipeline.syncOperations
            // Its idle timeout and its close on shutdown are for HTTP, not for the WebSocket.
            if let state = try? pipeline.handler(type: HTTPConnectionStateHandler.self) {
                pipeline.removeHandler(state, promise: nil)
            }
            try pipeline.handler(type: ConnectionFront.self).handOver(request: Self.requestHead(upgrade, allocator: context.channel.allocator))
        } catch {
            context.close(promise: nil)
        }
    }

    /// A WebSocket handshake request: NIO's HTTP decoder takes it for an upgrade too, and parses
    /// nothing after it.
    static func asksForWebSocket(_ request: HTTPRequest) -> Bool {
        func tokens(_ name: HTTPField.Name) -> [String] {
            request.headerFields[values: name].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        }
        return tokens(.connection).contains("upgrade") && tokens(.upgrade).contains("websocket")
    }

    /// The request head as HTTP/1.1 text, for the new pipeline's decoder; without a body.
    static func requestHead(_ request: HTTPRequest, allocator: ByteBufferAllocator) -> ByteBuffer {
        var text = "\(request.method.rawValue) \(request.path ?? "/") HTTP/1.1\r\n"
        if let authority = request.authority {
            text += "Host: \(authority)\r\n"
        }
        for field in request.headerFields where field.name != .contentLength && field.name != .transferEncoding {
            text += "\(field.name.rawName): \(field.value)\r\n"
        }
        return allocator.buffer(string: text + "\r\n")
    }
}
