import FlashEngine
import Foundation
import Hummingbird
import HummingbirdWebSocket
import NIOCore

/// One `/flash-progress` connection: the replay and then every event its filter lets through,
/// and the client's commands (ping, pause, resume, cancel).
///
/// Events go from the connection's bounded `EventSubscription` onto the channel through a
/// `ProgressFrameWriter`, on the channel's event loop, so neither a job nor other clients ever
/// wait on this socket. A client whose queue overflows is cut off: the writer stops with
/// `TooSlow` and the connection closes.
struct ProgressSocket: Sendable {
    let scheduler: JobScheduler
    let metrics: ServerMetrics
    let queueLimit: Int
    let maxMessageSize: Int
    /// Set in a farm: commands for another station's jobs go there.
    let farm: FarmLink?
    let fanouts = EventLoopFanouts()
    let open = OpenConnectionCount()

    /// `/flash-progress`, and the spellings third-party dashboards use: `/ws/flash-progress`, and
    /// `/ws/flash-progress/{jobId}` for `/flash-progress?jobId={jobId}`.
    static let paths = ["flash-progress", "ws/flash-progress", "ws/flash-progress/:jobId"]

    static func serves(path: String) -> Bool {
        path == "/flash-progress" || path == "/ws/flash-progress" || (path.hasPrefix("/ws/flash-progress/") && !path.dropFirst(19).contains("/"))
    }

    /// Serves one connection. `refusal` set: the access policy refused it, and it is closed at
    /// once with 1008 and that reason, with nothing else sent.
    func serve(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, request: Request, jobId: String?, refusal: String?, channel: any Channel) async throws {
        if let refusal {
            try await outbound.close(.policyViolation, reason: refusal)
            return
        }
        let query = request.uri.queryParameters
        let filter = EventFilter(
            jobId: jobId ?? query["jobId"].map(String.init),
            deviceId: query["deviceId"].map(String.init),
            include: query["include"].map(String.init)
        )
        let subscription = scheduler.broadcaster.subscribe(filter, limit: queueLimit)
        metrics.clientConnected()
        open.opened()
        defer {
            open.closed()
            subscription.close()
            metrics.clientDisconnected(coalescedMessages: subscription.coalescedCount, droppedMessages: subscription.droppedCount, tooSlow: subscription.didOverflow)
        }
        let writer = ProgressFrameWriter(channel: channel, subscription: subscription, fanout: fanouts.fanout(for: channel.eventLoop))
        writer.start()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await writer.finished()
                // Only the server closes a subscription while its client is there (the rest of
                // its queue is written by now): 1001, going away.
                try await outbound.close(.goingAway, reason: "the server is stopping")
            }
            group.addTask {
                for try await message in inbound.messages(maxSize: maxMessageSize) {
                    // The frame was read whole (see FlashServer's frame limit), so the client can
                    // read this close: 1009, the message too big.
                    if message.size > maxMessageSize {
                        try await outbound.close(.messageTooLarge, reason: "messages are at most \(maxMessageSize) bytes")
                        return
                    }
                    guard case .text(let text) = message else {
                        try await reply(CommandErrorMessage(error: "messages must be JSON text frames", timestamp: now()), outbound)
                        continue
                    }
                    try await handle(text, outbound)
                }
            }
            _ = try await group.next()
            group.cancelAll()
        }
    }

    private func handle(_ text: String, _ outbound: WebSocketOutboundWriter) async throws {
        let command: ClientCommand
        do {
            command = try ClientCommand(json: text)
        } catch let error as ClientCommand.ParseError {
            metrics.commandRefused()
            try await reply(CommandErrorMessage(error: error.message, command: error.type, jobId: error.jobId, timestamp: now()), outbound)
            return
        }
        switch command {
        case .ping:
            try await outbound.write(.text(#"{"type":"pong","timestamp":\#(now())}"#))
        case .pause(let jobId), .resume(let jobId), .cancel(let jobId):
            do {
                if scheduler.job(jobId) == nil, let farm, try await farm.command(command.name, jobId: jobId) != nil {
                    return
                }
                switch command {
                case .pause: try scheduler.pause(jobId)
                case .resume: try scheduler.resume(jobId)
                default: try scheduler.cancel(jobId)
                }
            } catch {
                metrics.commandRefused()
                try await reply(CommandErrorMessage(error: apiError(error).message, command: command.name, jobId: jobId, timestamp: now()), outbound)
            }
        }
    }

    private func reply(_ message: CommandErrorMessage, _ outbound: WebSocketOutboundWriter) async throws {
        try await outbound.write(.text(message.json))
    }

    private func now() -> Int64 { SystemClock().epochMillis() }
}

extension WebSocketMessage {
    /// Bytes the message carries.
    fileprivate var size: Int {
        switch self {
        case .text(let text): return text.utf8.count
        case .binary(let buffer): return buffer.readableBytes
        }
    }
}
