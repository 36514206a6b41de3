import Foundation
import XCTest

/// `flashctl devices --watch` over the real libudev monitor, with devices plugged and unplugged
/// while it runs (the test bed's control channel emits the uevents, as the kernel and udev would).
final class HotplugWatchTests: XCTestCase {
    func testPluggedAndUnpluggedDevicesAreReportedWithTheirProfile() throws {
        let emulator = try EmulatorProcess(serial: "HOTPLUG")
        defer { emulator.stop() }
        let control = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-control-\(UUID().uuidString)").path
        defer {
            try? FileManager.default.removeItem(atPath: control)
            try? FileManager.default.removeItem(atPath: control + ".ack")
        }
        let watch = try RunningCommand("/usr/bin/python3", [
            ProcessRunner.usbTestbed, "--control", control, "--",
            ProcessRunner.flashctl, "devices", "--watch", "--json",
        ])
        defer { watch.signal(SIGTERM); _ = watch.wait(timeout: 10) }
        XCTAssertTrue(wait(forLines: 1, in: control + ".ack"), "the test bed never said ready")
        XCTAssertTrue(watch.waitFor("watching udev", timeout: 20), "the monitor never started: \(watch.output)")

        let port = emulator.tcpSelector.replacingOccurrences(of: "tcp:", with: "")
        try send("add tcp=\(port),serial=EMU0003,port=1-3,prop.FLASHCTL_PROFILE=pixel-factory", to: control)
        try send("add tcp=\(port),serial=EMU0004,port=1-4", to: control)
        try send("remove EMU0003", to: control)
        XCTAssertTrue(wait(forLines: 4, in: control + ".ack"), (try? String(contentsOfFile: control + ".ack", encoding: .utf8)) ?? "")
        let ack = try String(contentsOfFile: control + ".ack", encoding: .utf8)
        XCTAssertFalse(ack.contains("error"), ack)

        XCTAssertTrue(watch.waitFor("\"event\":\"remove\"", timeout: 10), watch.output)
        let events = watch.events.filter { $0["event"] != nil }
        XCTAssertEqual(events.map { $0["event"] as? String ?? "" }, ["add", "add", "remove"], watch.output)
        XCTAssertEqual(events.map { $0["portPath"] as? String ?? "" }, ["1-3", "1-4", "1-3"])
        XCTAssertEqual(events.first?["profile"] as? String, "pixel-factory")
        XCTAssertEqual(events.first?["serial"] as? String, "EMU0003")
        XCTAssertEqual(events.first?["vidPid"] as? String, "18d1:4ee0")
        XCTAssertNil(events[1]["profile"], "a device no rule marked has no profile")
    }

    private func send(_ line: String, to fifo: String) throws {
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: fifo))
        handle.write(Data((line + "\n").utf8))
        try handle.close()
    }

    private func wait(forLines count: Int, in path: String, timeout: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if text.split(separator: "\n").count >= count { return true }
            usleep(20_000)
        }
        return false
    }
}
