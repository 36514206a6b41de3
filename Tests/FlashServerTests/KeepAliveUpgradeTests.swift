import FlashEngine
@testable import FlashServer
import Foundation
import Testing

/// A WebSocket upgrade on a keep-alive connection that has already served plain requests gets
/// what a new connection gets.
@Suite(.serialized) struct KeepAliveUpgradeTests {
    @Test func anUpgradeAfterAPlainRequestIsTheWebSocketWithItsReplayPingAndClose() async throws {
        let harness = try await ServerHarness.start(devices: 1, speed: 1 << 20)
        defer { harness.removeFiles() }
        try harness.makeImage("boot.img", bytes: 8 << 20)
        let jobId = try await harness.startJob(device: "EMU1", image: "boot.img")
        let connection = try RawConnection(port: harness.port)
        defer { connection.close() }

        let devices = try await connection.request("GET /api/devices")
        #expect(devices.status == 200)
        #expect(devices.body.contains("\"EMU1\""))
        let upgrade = try await connection.request(RawConnection.upgrade())
        #expect(upgrade.status == 101)
        #expect(upgrade.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")

        let started = try await connection.message { $0["type"] as? String == "flash_started" }
        #expect(started["jobId"] as? String == jobId, "the replay of the running job")
        try await connection.sendText(#"{"type":"ping","timestamp":1}"#)
        let pong = try await connection.message { $0["type"] as? String == "pong" }
        #expect(pong["timestamp"] is Int)

        await harness.stop()
        let close = try await connection.closeFrame()
        #expect(close == 1001, "a server that stops closes the client with 1001")
    }

    @Test func anUpgradeSentTogetherWithTwoPlainRequestsIsAnsweredAfterThem() async throws {
        let harness = try await ServerHarness.start(devices: 1)
        defer { harness.removeFiles() }
        let connection = try RawConnection(port: harness.port)
        defer { connection.close() }

        try await connection.send(RawConnection.text("GET /api/devices") + RawConnection.text("GET /api/jobs") + RawConnection.upgrade())
        let devices = try await connection.response()
        #expect(devices.status == 200)
        #expect(devices.body.contains("\"devices\""))
        let jobs = try await connection.response()
        #expect(jobs.status == 200)
        #expect(jobs.body.contains("\"jobs\""))
        #expect(try await connection.response().status == 101)
        try await connection.sendText(#"{"type":"ping","timestamp":7}"#)
        let pong = try await connection.message { $0["type"] as? String == "pong" }
        #expect(pong["timestamp"] is Int)
        await harness.stop()
    }

    @Test func theAccessPolicyDecidesAsOnANewConnection() async throws {
        let token = "s3cret-token-for-the-bench"
        let harness = try await ServerHarness.start(devices: 1, token: token)
        defer { harness.removeFiles() }

        // A refused WebSocket is accepted, then closed with 1008.
        let fresh = try RawConnection(port: harness.port)
        defer { fresh.close() }
        let refusedFresh = try await fresh.request(RawConnection.upgrade())
        #expect(refusedFresh.status == 101)
        #expect(try await fresh.closeFrame() == 1008)

        let reused = try RawConnection(port: harness.port)
        defer { reused.close() }
        #expect(try await reused.request("GET /api/jobs", headers: "Authorization: Bearer \(token)\r\n").status == 200)
        #expect(try await reused.request(RawConnection.upgrade()).status == refusedFresh.status)
        #expect(try await reused.closeFrame() == 1008)

        let allowed = try RawConnection(port: harness.port)
        defer { allowed.close() }
        #expect(try await allowed.request("GET /api/jobs", headers: "Authorization: Bearer \(token)\r\n").status == 200)
        #expect(try await allowed.request(RawConnection.upgrade(query: "?token=\(token)")).status == 101)
        try await allowed.sendText(#"{"type":"ping","timestamp":2}"#)
        #expect(try await allowed.message { $0["type"] as? String == "pong" }["timestamp"] is Int)
        await harness.stop()
    }

    @Test func theWebSocketOutlivesTheHTTPIdleTimeoutAndKeepsItsMessageLimit() async throws {
        let harness = try await ServerHarness.start(devices: 1, idleTimeout: 1)
        defer { harness.removeFiles() }
        let connection = try RawConnection(port: harness.port)
        defer { connection.close() }
        #expect(try await connection.request("GET /api/devices").status == 200)
        #expect(try await connection.request(RawConnection.upgrade()).status == 101)
        // Past the idle timeout that closes connections between HTTP requests.
        try await Task.sleep(for: .seconds(2.5))
        try await connection.sendText(#"{"type":"ping","timestamp":3}"#)
        #expect(try await connection.message { $0["type"] as? String == "pong" }["timestamp"] is Int)
        try await connection.sendText(#"{"type":"ping","pad":""# + String(repeating: "x", count: 100_000) + #""}"#)
        #expect(try await connection.closeFrame() == 1009)
        await harness.stop()
    }
}

/// One TCP connection driven by hand: HTTP/1.1 requests, then a WebSocket on the same connection.
/// Its blocking reads run off the test's threads.
final class RawConnection: @unchecked Sendable {
    struct Response: Sendable {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    private let socket: POSIXSocket
    private var buffered: [UInt8] = []

    init(port: Int) throws {
        socket = try POSIXSocket.connect(host: "127.0.0.1", port: UInt16(port), timeoutMs: 5000)
    }

    static func text(_ requestLine: String, headers: String = "") -> String {
        "\(requestLine) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(headers)\r\n"
    }

    static func upgrade(query: String = "") -> String {
        text("GET /flash-progress\(query)", headers: "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
    }

    /// `request` is a request line or a whole request (ending with its blank line).
    func request(_ request: String, headers: String = "") async throws -> Response {
        try await send(request.hasSuffix("\r\n\r\n") ? request : Self.text(request, headers: headers))
        return try await response()
    }

    func send(_ text: String) async throws {
        try await offThread { try self.socket.writeAll(Array(text.utf8), timeoutMs: 5000) }
    }

    /// The next response: its head, then a body as long as its Content-Length.
    func response() async throws -> Response {
        try await offThread {
            var end: Int?
            while end == nil {
                end = self.buffered.indices.dropLast(3).first { Array(self.buffered[$0..<($0 + 4)]) == [13, 10, 13, 10] }
                if end == nil { try self.fill() }
            }
            let head = String(decoding: self.buffered[..<end!], as: UTF8.self).components(separatedBy: "\r\n")
            self.buffered.removeFirst(end! + 4)
            var headers: [String: String] = [:]
            for line in head.dropFirst() {
                let parts = line.split(separator: ":", maxSplits: 1)
                if parts.count == 2 { headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces) }
            }
            let status = Int(head[0].split(separator: " ")[1]) ?? 0
            let body = try self.take(Int(headers["content-length"] ?? "0") ?? 0)
            return Response(status: status, headers: headers, body: String(decoding: body, as: UTF8.self))
        }
    }

    /// Sends a masked text frame, as clients must.
    func sendText(_ text: String) async throws {
        let payload = Array(text.utf8)
        var frame: [UInt8] = [0x81]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            frame += (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        frame += mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        let bytes = frame
        try await offThread { try self.socket.writeAll(bytes, timeoutMs: 5000) }
    }

    /// The first JSON text message that `matches`, skipping others.
    func message(_ matches: @escaping ([String: Any]) -> Bool) async throws -> [String: Any] {
        while true {
            let (opcode, payload) = try await frame()
            guard opcode == 1 else {
                throw FlashError(.protocolViolation, "frame \(opcode) instead of a text message")
            }
            if let object = (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any], matches(object) {
                return object
            }
        }
    }

    /// Reads to the server's close frame; returns its code.
    func closeFrame() async throws -> Int {
        while true {
            let (opcode, payload) = try await frame()
            if opcode == 8 { return payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : 1005 }
        }
    }

    func close() {
        socket.close()
    }

    private func frame() async throws -> (opcode: UInt8, payload: [UInt8]) {
        try await offThread {
            let header = try self.take(2)
            var length = Int(header[1] & 0x7F)
            if length == 126 {
                length = try self.take(2).reduce(0) { $0 << 8 | Int($1) }
            } else if length == 127 {
                length = try self.take(8).reduce(0) { $0 << 8 | Int($1) }
            }
            return (header[0] & 0x0F, try self.take(length))
        }
    }

    private func take(_ count: Int) throws -> [UInt8] {
        while buffered.count < count { try fill() }
        defer { buffered.removeFirst(count) }
        return Array(buffered[..<count])
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = try chunk.withUnsafeMutableBytes { try socket.read(into: $0, timeoutMs: 20_000) }
        buffered += chunk[..<n]
    }

    private func offThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
        }
    }
}
