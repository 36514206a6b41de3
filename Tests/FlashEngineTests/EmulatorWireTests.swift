import FlashEngine
import Foundation
import Synchronization
import XCTest

/// POSIXSocket and the fastboot-over-TCP framing, against a hand-driven peer.
final class EmulatorWireTests: XCTestCase {
    /// A listener on a free port and a connected client/server pair.
    private func pair() throws -> (client: POSIXSocket, server: POSIXSocket, listener: POSIXSocket) {
        let listener = try POSIXSocket.listen(host: "127.0.0.1", port: 0)
        XCTAssertNotEqual(listener.localPort, 0)
        let client = try POSIXSocket.connect(host: "127.0.0.1", port: listener.localPort, timeoutMs: 2000)
        let server = try listener.accept()
        return (client, server, listener)
    }

    func testFramesRoundTripInBothDirections() throws {
        let (client, server, listener) = try pair()
        defer { client.close(); server.close(); listener.close() }
        try FastbootTCPFraming.writeFrame(Array("getvar:product".utf8), socket: client, timeoutMs: 2000)
        try FastbootTCPFraming.writeFrame([], socket: client, timeoutMs: 2000)
        let big = [UInt8]((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let writer = Thread { try? FastbootTCPFraming.writeFrame(big, socket: client, timeoutMs: 2000) }
        writer.start()
        XCTAssertEqual(try FastbootTCPFraming.readFrame(socket: server, maxLength: 64, timeoutMs: 2000), Array("getvar:product".utf8))
        XCTAssertEqual(try FastbootTCPFraming.readFrame(socket: server, maxLength: 64, timeoutMs: 2000), [])
        XCTAssertEqual(try FastbootTCPFraming.readFrame(socket: server, maxLength: 1 << 20, timeoutMs: 2000), big)
        try FastbootTCPFraming.writeFrame(Array("OKAYboard".utf8), socket: server, timeoutMs: 2000)
        XCTAssertEqual(try client.readExactly(8, timeoutMs: 2000), [0, 0, 0, 0, 0, 0, 0, 9])
        XCTAssertEqual(try client.readExactly(9, timeoutMs: 2000), Array("OKAYboard".utf8))
    }

    func testAnAbsurdFrameLengthIsRefusedBeforeAnythingIsAllocated() throws {
        let (client, server, listener) = try pair()
        defer { client.close(); server.close(); listener.close() }
        try server.writeAll([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf0] + Array("OKAY".utf8), timeoutMs: 2000)
        XCTAssertThrowsError(try FastbootTCPFraming.readFrame(socket: client, maxLength: Int.max, timeoutMs: 2000)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .protocolViolation, "\(error)")
        }
        // Within the framing's limit but over the caller's.
        try server.writeAll(FastbootTCPFraming.header(forLength: 1 << 20), timeoutMs: 2000)
        XCTAssertThrowsError(try FastbootTCPFraming.readFrame(socket: client, maxLength: 256, timeoutMs: 2000)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .protocolViolation, "\(error)")
        }
        XCTAssertNil(FastbootTCPFraming.length(fromHeader: FastbootTCPFraming.header(forLength: FastbootTCPFraming.maxFrameLength + 1)))
        XCTAssertEqual(FastbootTCPFraming.length(fromHeader: FastbootTCPFraming.header(forLength: 0x0102_0304)), 0x0102_0304)
    }

    func testHandshakeAcceptsVersionOneAndLaterOnly() throws {
        for (answer, accepted) in [("FB01", true), ("FB02", true), ("FB00", false), ("HTTP", false), ("FBxy", false)] {
            let (client, server, listener) = try pair()
            defer { client.close(); server.close(); listener.close() }
            try server.writeAll(Array(answer.utf8), timeoutMs: 2000)
            if accepted {
                XCTAssertNoThrow(try FastbootTCPFraming.clientHandshake(socket: client, timeoutMs: 2000), answer)
            } else {
                XCTAssertThrowsError(try FastbootTCPFraming.clientHandshake(socket: client, timeoutMs: 2000), answer) { error in
                    XCTAssertEqual((error as? FlashError)?.kind, .protocolViolation, "\(error)")
                }
            }
            XCTAssertEqual(try server.readExactly(4, timeoutMs: 2000), Array("FB01".utf8))
        }
        let (client, server, listener) = try pair()
        defer { client.close(); server.close(); listener.close() }
        try client.writeAll(Array("FB01".utf8), timeoutMs: 2000)
        try FastbootTCPFraming.serverHandshake(socket: server)
        XCTAssertEqual(try client.readExactly(4, timeoutMs: 2000), Array("FB01".utf8))
    }

    func testConnectionRefusedSaysNoDeviceThere() throws {
        let listener = try POSIXSocket.listen(host: "127.0.0.1", port: 0)
        let port = listener.localPort
        listener.close()
        XCTAssertThrowsError(try POSIXSocket.connect(host: "127.0.0.1", port: port, timeoutMs: 2000)) { error in
            XCTAssertEqual((error as? FlashError)?.message, "no fastboot device at tcp:127.0.0.1:\(port) (connection refused)")
        }
    }

    func testPeerClosingAndTimeoutsAreReportedAsSuch() throws {
        let (client, server, listener) = try pair()
        defer { client.close(); listener.close() }
        XCTAssertThrowsError(try client.readExactly(4, timeoutMs: 100)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .timeout, "\(error)")
        }
        try server.writeAll([1, 2], timeoutMs: 2000)
        server.close()
        server.close()
        XCTAssertThrowsError(try client.readExactly(4, timeoutMs: 2000)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .disconnected, "\(error)")
            XCTAssertTrue((error as? FlashError)?.message.contains("connection closed by peer") ?? false, "\(error)")
        }
        // Writing to a closed peer fails with an error, not SIGPIPE.
        var failed = false
        for _ in 0..<100 where !failed {
            do { try client.writeAll([UInt8](repeating: 0, count: 65536), timeoutMs: 2000) } catch { failed = true }
        }
        XCTAssertTrue(failed)
    }

    /// Fills the peer's receive buffer and ours; the peer never reads.
    private func fill(_ socket: POSIXSocket) -> FlashError? {
        let chunk = [UInt8](repeating: 7, count: 1 << 20)
        do {
            for _ in 0..<64 { try socket.writeAll(chunk, timeoutMs: 300) }
        } catch {
            return error as? FlashError
        }
        return nil
    }

    func testAPeerThatStopsReadingEndsAWriteWithATimeout() throws {
        let (client, server, listener) = try pair()
        defer { client.close(); server.close(); listener.close() }
        let error = fill(client)
        XCTAssertEqual(error?.kind, .timeout)
        XCTAssertEqual(error?.message, "tcp:127.0.0.1:\(listener.localPort) stopped taking data (nothing accepted for 300 ms)")
    }

    func testInterruptEndsABlockedWriteAndEveryLaterWait() throws {
        let (client, server, listener) = try pair()
        defer { client.close(); server.close(); listener.close() }
        let chunk = [UInt8](repeating: 7, count: 1 << 20)
        let ended = expectation(description: "blocked writer ended")
        let kind = Mutex<FlashError.Kind?>(nil)
        Thread {
            do {
                for _ in 0..<64 { try client.writeAll(chunk, timeoutMs: nil) }
            } catch {
                kind.withLock { $0 = (error as? FlashError)?.kind }
            }
            ended.fulfill()
        }.start()
        usleep(200_000)
        client.interrupt()
        wait(for: [ended], timeout: 5)
        XCTAssertEqual(kind.withLock { $0 }, .cancelled)
        XCTAssertThrowsError(try client.readExactly(1, timeoutMs: nil)) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .cancelled, "\(error)")
        }
    }

    func testShutdownWakesABlockedReader() throws {
        let (client, server, listener) = try pair()
        defer { client.close(); server.close(); listener.close() }
        let woke = expectation(description: "reader woke")
        Thread {
            do { var buffer = [UInt8](repeating: 0, count: 16)
                _ = try buffer.withUnsafeMutableBytes { try client.read(into: $0, timeoutMs: nil) } } catch { woke.fulfill() }
        }.start()
        usleep(100_000)
        client.shutdown()
        wait(for: [woke], timeout: 5)
    }
}
