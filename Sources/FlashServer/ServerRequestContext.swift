import FlashEngine
import Foundation
import Hummingbird
import HummingbirdWebSocket
import NIOCore

/// Hummingbird's WebSocket request context, plus the connection's channel: `/flash-progress`
/// writes its events onto the channel directly (`ProgressFrameWriter`).
struct ServerRequestContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>
    let channel: any Channel

    /// Response bodies with slashes unescaped, like everything else flashctl writes.
    var responseEncoder: JSONEncoder { JSONOutput.encoder() }

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        channel = source.channel
    }
}
