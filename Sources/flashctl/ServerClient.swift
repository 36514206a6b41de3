import AsyncHTTPClient
import FlashEngine
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// Talks to a running `flashctl serve`: its HTTP API and its WebSocket.
struct ServerClient {
    let baseURL: String
    let token: String?
    /// A PEM CA certificate to trust for an https server (one with a certificate of its own).
    let ca: String?

    init(server: String?, token: String?, ca: String? = nil) {
        let environment = ProcessInfo.processInfo.environment
        var base = server ?? environment["FLASHCTL_SERVER"] ?? "http://127.0.0.1:3001"
        while base.hasSuffix("/") { base.removeLast() }
        baseURL = base
        self.token = token ?? environment["FLASHCTL_TOKEN"]
        self.ca = ca ?? environment["FLASHCTL_CA"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Whether the server is named by an IP address rather than a host name.
    private var serverIsAnIPAddress: Bool {
        let host = URL(string: baseURL)?.host ?? ""
        return host.contains(":") || (!host.isEmpty && host.allSatisfy { $0.isNumber || $0 == "." })
    }

    /// For the WebSocket: the same trust. The WebSocket client sends the URL's host as the TLS
    /// server name, which an IP address may not be (RFC 6066), so a server named by IP address
    /// is sent a reserved name instead, and its certificate's chain is checked but not its name:
    /// the HTTPS request that started the job has just checked that, on the same address and port.
    private func webSocketTLSConfiguration() throws -> TLSConfiguration {
        var tls = try tlsConfiguration()
        if serverIsAnIPAddress { tls.certificateVerification = .noHostnameVerification }
        return tls
    }

    /// The system's trust store, plus `ca` when given.
    private func tlsConfiguration() throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let ca {
            guard FileManager.default.isReadableFile(atPath: ca) else { throw FlashError(.io, "cannot read the CA certificate \(ca)") }
            tls.trustRoots = .file(ca)
        }
        return tls
    }

    /// The parsed JSON answer of a request; a non-2xx answer throws its `error` text.
    func request(_ method: String, _ path: String, body: [String: Any]? = nil) async throws -> Any {
        guard baseURL.hasPrefix("http://") || baseURL.hasPrefix("https://"), URL(string: baseURL + path) != nil else {
            throw FlashError(.io, "'\(baseURL)' is not a server URL (like http://127.0.0.1:3001)")
        }
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = HTTPMethod(rawValue: method)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
            request.headers.add(name: "Content-Type", value: "application/json")
        }
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: try tlsConfiguration()))
        let data: ByteBuffer
        let status: Int
        do {
            let response = try await client.execute(request, timeout: .seconds(30))
            status = Int(response.status.code)
            data = try await response.body.collect(upTo: 64 << 20)
            try await client.shutdown()
        } catch {
            try? await client.shutdown()
            throw FlashError(.io, "cannot reach the flashctl server at \(baseURL) (\(error)); is 'flashctl serve' running\(baseURL.hasPrefix("https://") ? ", and is its certificate trusted (--ca FILE)" : "")?")
        }
        let json = try? JSONSerialization.jsonObject(with: Data(data.readableBytesView))
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
        if serverIsAnIPAddress { configuration.sniHostname = "flashctl-server.invalid" }
        var logger = Logger(label: "flashctl.client")
        logger.logLevel = .critical
        let terminal = TerminalBox()
        try await WebSocketClient.connect(
            url: "\(wsBase)/flash-progress?jobId=\(jobId)&include=device_message",
            configuration: configuration, tlsConfiguration: wsBase.hasPrefix("wss://") ? try webSocketTLSConfiguration() : nil, logger: logger
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
