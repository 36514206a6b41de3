import Foundation
import XCTest

/// `flashctl devices --watch` over the real libudev monitor, with devices plugged and unplugged
/// while it runs (the test bed's control channel emits the uevents, as the kernel and udev would).
final class HotplugWatchTests: XCTestCase {
    func testPluggedAndUnpluggedDevicesAreReportedWithTheirProfile() throws {
        let emulator = try EmulatorProcess(serial: "HOTPLUG")
        defer { emulator.stop() }
        let control = try TestbedControl(path: FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-control-\(UUID().uuidString)").path)
        defer { control.remove() }
        let watch = try RunningCommand("/usr/bin/python3", [
            ProcessRunner.usbTestbed, "--control", control.path, "--",
            ProcessRunner.flashctl, "devices", "--watch", "--json",
        ])
        defer { watch.signal(SIGTERM); _ = watch.wait(timeout: 10) }
        XCTAssertTrue(control.waitUntilReady(), "the test bed never said ready")
        XCTAssertTrue(watch.waitFor("watching udev", timeout: 20), "the monitor never started: \(watch.output)")

        let port = emulator.tcpSelector.replacingOccurrences(of: "tcp:", with: "")
        try control.send("add tcp=\(port),serial=EMU0003,port=1-3,prop.FLASHCTL_PROFILE=pixel-factory")
        try control.send("add tcp=\(port),serial=EMU0004,port=1-4")
        try control.send("remove EMU0003")

        XCTAssertTrue(watch.waitFor("\"event\":\"remove\"", timeout: 10), watch.output)
        let events = watch.events.filter { $0["event"] != nil }
        XCTAssertEqual(events.map { $0["event"] as? String ?? "" }, ["add", "add", "remove"], watch.output)
        XCTAssertEqual(events.map { $0["portPath"] as? String ?? "" }, ["1-3", "1-4", "1-3"])
        XCTAssertEqual(events.first?["profile"] as? String, "pixel-factory")
        XCTAssertEqual(events.first?["serial"] as? String, "EMU0003")
        XCTAssertEqual(events.first?["vidPid"] as? String, "18d1:4ee0")
        XCTAssertNil(events[1]["profile"], "a device no rule marked has no profile")
    }
}
