import FlashEngine
import Foundation
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HummingbirdWSClient
import Logging

/// Talks to a running `flashctl serve`: its HTTP API and its WebSocket.
struct ServerClient {
    let baseURL: String
    let token: String?

    init(server: String?, token: String?) {
        let environment = ProcessInfo.processInfo.environment
        var base = server ?? environment["FLASHCTL_SERVER"] ?? "http://127.0.0.1:3001"
        while base.hasSuffix("/") { base.removeLast() }
        baseURL = base
        self.token = token ?? environment["FLASHCTL_TOKEN"]
    }

    /// The parsed JSON answer of a request; a non-2xx answer throws its `error` text.
    func request(_ method: String, _ path: String, body: [String: Any]? = nil) async throws -> Any {
        guard let url = URL(string: baseURL + path) else {
            throw FlashError(.io, "'\(baseURL)' is not a server URL (like http://127.0.0.1:3001)")
        }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = 30
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw FlashError(.io, "cannot reach the flashctl server at \(baseURL) (\(error.localizedDescription)); is 'flashctl serve' running?")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let json = try? JSONSerialization.jsonObject(with: data)
        guard (200..<300).contains(status) else {
            let message = (json as? [String: Any])?["error"] as? String ?? "HTTP \(status)"
            throw FlashError(status == 404 ? .unknownJob : .jobState, message)
        }
        guard let json else {
            throw FlashError(.protocolViolation, "the server at \(baseURL) answered \(path) with something other than JSON")
        }
        return json
    }

    /// Follows one job's events over the WebSocket until it ends; returns its terminal event.
    /// `onEvent` sees every event; `control` lets the caller send commands (Ctrl-C -> cancel).
    func follow(jobId: String, onEvent: @escaping @Sendable (FlashEvent) -> Void, commands: AsyncStream<String>) async throws -> FlashEvent? {
        let wsBase = baseURL.replacingOccurrences(of: "http://", with: "ws://").replacingOccurrences(of: "https://", with: "wss://")
        var configuration = WebSocketClientConfiguration()
        if let token { configuration.additionalHeaders[.authorization] = "Bearer \(token)" }
        var logger = Logger(label: "flashctl.client")
        logger.logLevel = .critical
        let terminal = TerminalBox()
        try await WebSocketClient.connect(
            url: "\(wsBase)/flash-progress?jobId=\(jobId)&include=device_message",
            configuration: configuration, logger: logger
        ) { inbound, outbound, _ in
            let sender = Task {
                for await command in commands {
                    try await outbound.write(.text(command))
                }
            }
            defer { sender.cancel() }
            for try await message in inbound.messages(maxSize: 1 << 20) {
                guard case .text(let text) = message, let event = FlashEvent(protocolJSON: text) else { continue }
                onEvent(event)
                if event.isTerminal {
                    terminal.value = event
                    try await outbound.close(.normalClosure, reason: nil)
                    return
                }
            }
        }
        return terminal.value
    }
}

private final class TerminalBox: Sendable {
    private let event = Mutex<FlashEvent?>(nil)

    var value: FlashEvent? {
        get { event.withLock { $0 } }
        set { event.withLock { $0 = newValue } }
    }
}
