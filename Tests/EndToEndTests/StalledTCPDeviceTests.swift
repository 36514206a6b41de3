import FlashEngine
import Foundation
import XCTest

/// A fastboot-over-TCP device that stops reading download data mid-transfer (its receive buffer
/// full, the connection open): the job must end with a timeout, and a cancel, Ctrl-C or a
/// server's shutdown must end it at once, never leave it hanging.
final class StalledTCPDeviceTests: XCTestCase {
    /// Far more than the socket buffers on both sides hold, so the host's sends block.
    private static let imageSize = 48 << 20

    private func stalledEmulator(_ serial: String) throws -> EmulatorProcess {
        try EmulatorProcess(serial: serial, extraArguments: ["--stop-reading-after-bytes", "1M"])
    }

    func testFlashEndsWithATimeoutWhenTheDeviceStopsTakingData() throws {
        let emulator = try stalledEmulator("TCPSTOP")
        defer { emulator.stop() }
        let path = try TestImages.write(TestImages.random(Self.imageSize), name: "boot.img")
        let result = try ProcessRunner.run(
            ProcessRunner.flashctl,
            ["flash", "--device", emulator.tcpSelector, path, "--command-timeout", "2", "--write-timeout", "3", "--json"], timeout: 30)
        XCTAssertEqual(result.status, 1, result.stderr)
        let error = result.events(ofType: "flash_failed").first?["error"] as? String ?? ""
        XCTAssertEqual(error, "\(emulator.tcpSelector) stopped taking data (nothing accepted for 2 s)", result.stdout)
        let started = try XCTUnwrap(result.events(ofType: "flash_started").first?["timestamp"] as? Double)
        let ended = try XCTUnwrap(result.events(ofType: "flash_failed").first?["timestamp"] as? Double)
        XCTAssertLessThan(ended - started, 3_000, "the job must end within the 2 s timeout and a second")
        XCTAssertNil(emulator.partition("boot"))
    }

    func testCtrlCEndsAFlashStuckOnADeviceThatStopsTakingData() throws {
        let emulator = try stalledEmulator("TCPSTOPINT")
        defer { emulator.stop() }
        let path = try TestImages.write(TestImages.random(Self.imageSize), name: "boot.img")
        let flash = try RunningCommand(ProcessRunner.flashctl, ["flash", "--device", emulator.tcpSelector, path, "--command-timeout", "120", "--json"])
        XCTAssertTrue(flash.waitFor(#""stage":"Sending boot""#), flash.output)
        // The device has taken its megabyte and the host's send is blocked on a full buffer.
        usleep(1_500_000)
        let interrupted = Date()
        flash.signal(SIGINT)
        let status = flash.wait(timeout: 10)
        XCTAssertEqual(status, 130, "Ctrl-C ends flashctl as the shell expects: \(flash.output)")
        XCTAssertLessThan(Date().timeIntervalSince(interrupted), 1.5, "Ctrl-C must end the job within a second")
        let failed = flash.events.first { $0["type"] as? String == "flash_failed" }
        XCTAssertEqual(failed?["reason"] as? String, "cancelled", flash.output)
        XCTAssertEqual(failed?["error"] as? String, "Flash cancelled by user")
        XCTAssertTrue(flash.output.contains("flashctl: cancelled before anything was written to boot on \(emulator.tcpSelector)"), flash.output)
    }

    /// A host that takes the connection and never answers the fastboot handshake: Ctrl-C ends the
    /// job at once, not when the 5 s connect timeout passes.
    func testCtrlCEndsAFlashWaitingForTheHandshake() throws {
        let silent = try POSIXSocket.listen(host: "127.0.0.1", port: 0)
        defer { silent.close() }
        let path = try TestImages.write(TestImages.random(1 << 20), name: "boot.img")
        let flash = try RunningCommand(ProcessRunner.flashctl, ["flash", "--device", "tcp:127.0.0.1:\(silent.localPort)", path, "--json"])
        XCTAssertTrue(flash.waitFor(#""stage":"Connecting""#), flash.output)
        usleep(500_000)
        let interrupted = Date()
        flash.signal(SIGINT)
        XCTAssertEqual(flash.wait(timeout: 10), 130, flash.output)
        XCTAssertLessThan(Date().timeIntervalSince(interrupted), 1.5, "Ctrl-C must not wait for the connect timeout")
        let failed = flash.events.first { $0["type"] as? String == "flash_failed" }
        XCTAssertEqual(failed?["reason"] as? String, "cancelled", flash.output)
    }

    func testTheServerCancelsAndStopsJobsStuckOnSuchADevice() throws {
        let first = try stalledEmulator("TCPSTOPA")
        let second = try stalledEmulator("TCPSTOPB")
        defer { first.stop(); second.stop() }
        let server = try ServeProcess(arguments: ["--allow-tcp", "127.0.0.1"])
        defer { server.removeFiles() }
        try server.write(image: "boot.img", TestImages.random(Self.imageSize))

        let cancelled = try startJob(on: first, server: server)
        try waitUntilStuck(cancelled, server: server)
        let asked = Date()
        let answer = try curl(["-X", "POST", "\(server.url)/api/jobs/\(cancelled)/cancel"])
        XCTAssertEqual(answer.events.first?["status"] as? String, "cancelling", answer.stdout)
        XCTAssertEqual(try waitForEnd(cancelled, server: server)?["state"] as? String, "cancelled")
        XCTAssertLessThan(Date().timeIntervalSince(asked), 1.5, "the API's cancel must end the job within a second")

        // A server stopped while a job is stuck ends it and records how it ended.
        let stopped = try startJob(on: second, server: server)
        try waitUntilStuck(stopped, server: server)
        XCTAssertEqual(server.stop(signal: SIGTERM), 0)
        let history = try ProcessRunner.run(ProcessRunner.flashctl, ["history", "--history", server.history, "--json"])
        let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]], history.stderr)
        let states = Dictionary(uniqueKeysWithValues: entries.compactMap { entry in
            (entry["jobId"] as? String).map { ($0, entry["result"] as? String ?? "") }
        })
        XCTAssertEqual(states, [cancelled: "cancelled", stopped: "interrupted"], history.stdout)
        let stoppedEntry = entries.first { $0["jobId"] as? String == stopped }
        XCTAssertEqual(stoppedEntry?["error"] as? String, "The server stopped before this flash finished")
    }

    private func curl(_ arguments: [String]) throws -> CommandResult {
        try ProcessRunner.run("/usr/bin/curl", ["-sS"] + arguments, timeout: 30)
    }

    private func startJob(on emulator: EmulatorProcess, server: ServeProcess) throws -> String {
        let body = #"{"deviceId":"\#(emulator.tcpSelector)","image":"boot.img"}"#
        let start = try curl(["-X", "POST", "-d", body, "\(server.url)/api/flash/start"])
        return try XCTUnwrap(start.events.first?["jobId"] as? String, start.stdout)
    }

    private func job(_ id: String, server: ServeProcess) throws -> [String: Any]? {
        try curl(["\(server.url)/api/jobs/\(id)"]).events.first
    }

    /// Waits until the device has taken its megabyte and the job's sends block.
    private func waitUntilStuck(_ id: String, server: ServeProcess) throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let bytes = try job(id, server: server)?["bytesTransferred"] as? Int, bytes > 0 {
                usleep(1_000_000)
                return
            }
            usleep(100_000)
        }
        XCTFail("job \(id) never started sending")
    }

    /// The job once it has ended, or nil if it is still going after 10 s.
    private func waitForEnd(_ id: String, server: ServeProcess) throws -> [String: Any]? {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let job = try job(id, server: server), ["completed", "failed", "cancelled", "interrupted"].contains(job["state"] as? String ?? "") {
                return job
            }
            usleep(100_000)
        }
        XCTFail("job \(id) did not end within 10 s of its cancel")
        return nil
    }
}
