import FlashEngine
@testable import FlashServer
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HummingbirdWSClient
import Logging
import Testing

/// A real server on a free loopback port, with emulated devices and its own image directory and
/// history, driven over real sockets.
final class ServerHarness: @unchecked Sendable {
    let server: FlashServer
    let base: String
    let images: String
    let url: String
    let port: Int
    private let task: Task<Void, any Error>

    static func start(
        devices: Int = 2, speed: Int64? = nil, token: String? = nil, allowedOrigins: [String] = [],
        host: String = "127.0.0.1", base: String? = nil, queueLimit: Int = 1024, maxParallel: Int = 16,
        idleTimeout: Double = 30, slots: Bool = false
    ) async throws -> ServerHarness {
        let base = base ?? NSTemporaryDirectory() + "flashctl-server-\(UUID().uuidString)"
        var configuration = ServerConfiguration(
            host: host, port: 0, token: token, allowedOrigins: allowedOrigins,
            imageDirectory: base + "/images", historyPath: base + "/history.sqlite",
            scheduler: .init(maxParallelJobs: maxParallel), emulatedDevices: devices, emulatedSpeed: speed,
            clientQueueLimit: queueLimit, shutdownGrace: 5
        )
        configuration.idleTimeout = idleTimeout
        configuration.emulatedSlots = slots
        let server = try FlashServer(configuration: configuration, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let (addresses, continuation) = AsyncStream<String>.makeStream()
        let task = Task { try await server.run { continuation.yield($0) } }
        var iterator = addresses.makeAsyncIterator()
        guard let url = await iterator.next() else { throw FlashError(.io, "the server did not start") }
        return ServerHarness(server: server, base: base, url: url, task: task)
    }

    private init(server: FlashServer, base: String, url: String, task: Task<Void, any Error>) {
        self.server = server
        self.base = base
        self.images = base + "/images"
        self.url = url
        self.port = server.port
        self.task = task
    }

    func stop() async {
        await server.shutdown()
        _ = try? await task.value
    }

    func removeFiles() {
        try? FileManager.default.removeItem(atPath: base)
    }

    /// A random image of `bytes` in the image directory; returns its contents.
    @discardableResult
    func makeImage(_ name: String, bytes: Int) throws -> Data {
        let data = try #require(FileHandle(forReadingAtPath: "/dev/urandom")).readData(ofLength: bytes)
        try data.write(to: URL(fileURLWithPath: images + "/" + name))
        return data
    }

    /// What emulated device `serial` holds in `partition`.
    func partition(_ serial: String, _ name: String) -> Data? {
        let directory = (server.emulatedDevicesDirectory ?? "") + "/" + serial
        return FileManager.default.contents(atPath: directory + "/\(name).img") ?? FileManager.default.contents(atPath: directory + "/\(name)")
    }

    // MARK: HTTP

    struct HTTPAnswer {
        var status: Int
        var json: [String: Any]
        var text: String
        var headers: [String: String]
    }

    func http(_ method: String, _ path: String, body: [String: Any]? = nil, headers: [String: String] = [:]) async throws -> HTTPAnswer {
        var request = URLRequest(url: URL(string: url + path)!)
        request.httpMethod = method
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        if let body { request.httpBody = try JSONSerialization.data(withJSONObject: body) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        var fields: [String: String] = [:]
        for (key, value) in http.allHeaderFields { fields[String(describing: key).lowercased()] = String(describing: value) }
        return HTTPAnswer(
            status: http.statusCode,
            json: ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any]) ?? [:],
            text: String(decoding: data, as: UTF8.self),
            headers: fields)
    }

    /// Starts a job through the API and returns its id.
    func startJob(device: String, image: String, partition: String? = nil, bandwidthLimit: Int64? = nil) async throws -> String {
        var body: [String: Any] = ["deviceId": device, "image": image]
        if let partition { body["partition"] = partition }
        if let bandwidthLimit { body["bandwidthLimit"] = bandwidthLimit }
        let answer = try await http("POST", "/api/flash/start", body: body)
        try #require(answer.status == 200, "start failed: \(answer.status) \(answer.text)")
        return try #require(answer.json["jobId"] as? String)
    }

    func job(_ id: String) async throws -> [String: Any] {
        try await http("GET", "/api/jobs/\(id)").json
    }

    /// Polls the job until `condition` holds (or fails the test after `timeout` seconds).
    @discardableResult
    func waitForJob(_ id: String, timeout: Double = 30, _ condition: @escaping ([String: Any]) -> Bool = { ["completed", "failed", "cancelled"].contains($0["state"] as? String ?? "") }) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try await job(id)
            if condition(last) { return last }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("job \(id) did not get there within \(timeout) s; last: \(last)")
        throw FlashError(.timeout, "timeout")
    }

    // MARK: WebSocket

    func connect(path: String = "/flash-progress", query: String = "", headers: [String: String] = [:]) async throws -> ProgressClient {
        try await ProgressClient.connect(url: url.replacingOccurrences(of: "http://", with: "ws://") + path + query, headers: headers)
    }

    /// A socket the server is expected to refuse: returned once it is closed (having sent a ping).
    func refusedSocket(query: String = "", headers: [String: String] = [:]) async throws -> ProgressClient {
        let client = ProgressClient(url: url.replacingOccurrences(of: "http://", with: "ws://") + "/flash-progress" + query, headers: headers)
        client.send(["type": "ping", "timestamp": 1])
        try await client.wait(timeout: 10, "the close", until: { _ in client.isClosed })
        return client
    }
}

/// A dashboard stand-in: a real WebSocket client that keeps every message it receives.
final class ProgressClient: Sendable {
    private let store = MessageStore()
    private let outgoing: AsyncStream<String>.Continuation
    private let task: Task<Void, Never>

    static func connect(url: String, headers: [String: String]) async throws -> ProgressClient {
        let client = ProgressClient(url: url, headers: headers)
        client.send(["type": "ping", "timestamp": 1])
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if client.messages(ofType: "pong").count > 0 { return client }
            if client.isClosed { throw client.store.error ?? FlashError(.io, "WebSocket closed at once") }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw FlashError(.timeout, "no pong from \(url)")
    }

    init(url: String, headers: [String: String]) {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        outgoing = continuation
        var configuration = WebSocketClientConfiguration(maxFrameSize: 4 << 20)
        for (name, value) in headers {
            configuration.additionalHeaders[.init(name)!] = value
        }
        let store = self.store
        task = Task { [configuration] in
            do {
                let logger = Logger(label: "ws", factory: { _ in SwiftLogNoOpLogHandler() })
                let close = try await WebSocketClient.connect(url: url, configuration: configuration, logger: logger) { inbound, outbound, _ in
                    let sender = Task {
                        for await text in stream { try await outbound.write(.text(text)) }
                    }
                    defer { sender.cancel() }
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        if case .text(let text) = message,
                           let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] {
                            store.append(object)
                        }
                    }
                }
                store.finish(code: close.map { Int(UInt16(webSocketErrorCode: $0.closeCode)) }, reason: close?.reason, error: nil)
            } catch {
                store.finish(code: nil, reason: nil, error: error)
            }
        }
    }

    var messages: [[String: Any]] { store.messages }
    var isClosed: Bool { store.isClosed }
    var closeStatus: Int? { store.closeCode }
    var closeReason: String? { store.closeReason }

    func messages(ofType type: String) -> [[String: Any]] {
        messages.filter { $0["type"] as? String == type }
    }

    /// Messages about one job, in order.
    func messages(job: String) -> [[String: Any]] {
        messages.filter { $0["jobId"] as? String == job }
    }

    func send(_ object: [String: Any]) {
        let data = try! JSONSerialization.data(withJSONObject: object)
        outgoing.yield(String(decoding: data, as: UTF8.self))
    }

    func sendRaw(_ text: String) {
        outgoing.yield(text)
    }

    /// Waits until `condition` holds for the received messages.
    func wait(timeout: Double = 20, _ what: String = "messages", until condition: ([[String: Any]]) -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(messages) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("timed out waiting for \(what); got \(messages.map { $0["type"] as? String ?? "?" })")
        throw FlashError(.timeout, "timeout")
    }

    func waitForEnd(of job: String, timeout: Double = 30) async throws {
        try await wait(timeout: timeout, "the end of \(job)") { messages in
            messages.contains { ($0["jobId"] as? String) == job && ["flash_completed", "flash_failed"].contains($0["type"] as? String ?? "") }
        }
    }

    func close() {
        outgoing.finish()
        task.cancel()
    }
}

private final class MessageStore: @unchecked Sendable {
    private let lock = NSLock()
    private var received: [[String: Any]] = []
    private var closed = false
    private var code: Int?
    private var reason: String?
    private var failure: (any Error)?

    func append(_ message: [String: Any]) {
        lock.lock(); received.append(message); lock.unlock()
    }

    func finish(code: Int?, reason: String?, error: (any Error)?) {
        lock.lock(); closed = true; self.code = code; self.reason = reason; failure = error; lock.unlock()
    }

    var messages: [[String: Any]] { lock.lock(); defer { lock.unlock() }; return received }
    var isClosed: Bool { lock.lock(); defer { lock.unlock() }; return closed }
    var closeCode: Int? { lock.lock(); defer { lock.unlock() }; return code }
    var closeReason: String? { lock.lock(); defer { lock.unlock() }; return reason }
    var error: (any Error)? { lock.lock(); defer { lock.unlock() }; return failure }
}
