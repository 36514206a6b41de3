import Foundation
import HummingbirdWSClient
import Logging

/// A dashboard stand-in for end-to-end tests: a real WebSocket client on `/flash-progress` that
/// keeps every message it receives.
final class DashboardSocket {
    private let store = MessageLog()
    private var task: Task<Void, Never>?

    /// Connects to `serverURL` (http://...); returns once the server has answered a ping.
    init(serverURL: String) throws {
        let url = serverURL.replacingOccurrences(of: "http://", with: "ws://") + "/flash-progress"
        let store = self.store
        task = Task {
            let logger = Logger(label: "dashboard", factory: { _ in SwiftLogNoOpLogHandler() })
            _ = try? await WebSocketClient.connect(url: url, configuration: .init(maxFrameSize: 1 << 20), logger: logger) { inbound, outbound, _ in
                try await outbound.write(.text(#"{"type":"ping","timestamp":1}"#))
                for try await message in inbound.messages(maxSize: 1 << 20) {
                    if case .text(let text) = message, let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] {
                        store.append(object)
                    }
                }
            }
        }
        guard waitFor(timeout: 10, { $0.contains { $0["type"] as? String == "pong" } }) else {
            throw NSError(domain: "DashboardSocket", code: 1, userInfo: [NSLocalizedDescriptionKey: "no pong from \(url)"])
        }
    }

    deinit {
        task?.cancel()
    }

    var messages: [[String: Any]] { store.messages }

    /// Job messages in the order they came, for one device.
    func messages(device: String) -> [[String: Any]] {
        messages.filter { $0["deviceId"] as? String == device }
    }

    /// Waits until `condition` holds for the messages so far; false after `timeout` seconds.
    func waitFor(timeout: Double = 30, _ condition: ([[String: Any]]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(messages) { return true }
            usleep(10_000)
        }
        return condition(messages)
    }

    /// Waits for the device's job to end; returns its last message (flash_completed or flash_failed).
    func end(of device: String, timeout: Double = 30) -> [String: Any]? {
        let ended: ([[String: Any]]) -> Bool = { messages in
            messages.contains { $0["deviceId"] as? String == device && ["flash_completed", "flash_failed"].contains($0["type"] as? String ?? "") }
        }
        guard waitFor(timeout: timeout, ended) else { return nil }
        return messages(device: device).last { ["flash_completed", "flash_failed"].contains($0["type"] as? String ?? "") }
    }
}

extension Array where Element == [String: Any] {
    var types: [String] { map { $0["type"] as? String ?? "?" } }
}

/// What a `DashboardSocket` received, written by its connection's task.
private final class MessageLog: @unchecked Sendable {
    private let lock = NSLock()
    private var received: [[String: Any]] = []

    func append(_ message: [String: Any]) {
        lock.lock(); received.append(message); lock.unlock()
    }

    var messages: [[String: Any]] {
        lock.lock(); defer { lock.unlock() }
        return received
    }
}
