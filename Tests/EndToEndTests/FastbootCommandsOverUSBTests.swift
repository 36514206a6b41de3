import Foundation
import XCTest

/// The fastboot commands and a factory update with dynamic partitions through the real libusb,
/// above the umockdev test bed, where a device rebooting into fastbootd or its bootloader leaves
/// the bus and comes back on its port with a new device number, as a real one does.
final class FastbootCommandsOverUSBTests: XCTestCase {
    func testSlotsEraseGetvarFastbootdAndBackAndAnUpdateFollowTheDeviceAcrossReboots() throws {
        let device = try EmulatorProcess(serial: "USB-AB", extraArguments: ["--slots"])
        defer { device.stop() }
        let work = device.directory + "-work"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let boot = TestImages.random(150_000, seed: 11)
        try boot.write(to: URL(fileURLWithPath: work + "/boot.img"))
        let zip = try FactoryZip.make(in: work, images: ["boot": 120_000, "system": 400_000, "vendor": 200_000], superPartitions: ["system", "vendor"])

        // One shell in the test bed, as a technician types the commands; after a reboot the next
        // command waits for the device to be back on the bus.
        let flashctl = ProcessRunner.flashctl
        let script = """
            set -e
            back() { for i in $(seq 100); do "\(flashctl)" getvar -d usb:1-1 product >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
            "\(flashctl)" getvar -d usb:1-1 all > "\(work)/all.txt"
            "\(flashctl)" flash -d usb:1-1 --slot all --json boot "\(work)/boot.img" > /dev/null
            "\(flashctl)" erase -d usb:1-1 --slot a boot
            "\(flashctl)" flash -d usb:1-1 --slot b --json dtbo "\(work)/boot.img" > /dev/null
            "\(flashctl)" set-active -d usb:1-1 b
            "\(flashctl)" reboot -d usb:1-1 fastboot
            back; "\(flashctl)" getvar -d usb:1-1 is-userspace > "\(work)/fastbootd.txt"
            "\(flashctl)" reboot -d usb:1-1 bootloader
            back; "\(flashctl)" getvar -d usb:1-1 is-userspace > "\(work)/bootloader.txt"
            "\(flashctl)" update -d usb:1-1 --skip-reboot --json "\(zip)" > "\(work)/update.json"
            """
        let result = try ProcessRunner.run("/usr/bin/python3", [
            ProcessRunner.usbTestbed, "--device", device.usbDevice(serial: "EMU0001", port: "1-1"), "--", "/bin/sh", "-c", script,
        ], timeout: 120)
        XCTAssertEqual(result.status, 0, result.stderr)

        let all = try String(contentsOfFile: work + "/all.txt", encoding: .utf8)
        XCTAssertTrue(all.contains("current-slot: a\n") && all.contains("slot-count: 2\n"), all)
        XCTAssertEqual(device.partition("boot_a"), Data(), "--slot all wrote both, then erase --slot a emptied a")
        XCTAssertEqual(device.partition("dtbo_b"), boot, "--slot b")
        XCTAssertNil(device.partition("dtbo_a"))
        XCTAssertEqual(try String(contentsOfFile: work + "/fastbootd.txt", encoding: .utf8), "is-userspace: yes\n")
        XCTAssertEqual(try String(contentsOfFile: work + "/bootloader.txt", encoding: .utf8), "is-userspace: no\n")
        XCTAssertEqual(result.stderr.components(separatedBy: "back after its reboot at 1-1").count - 1, 3,
                       "fastbootd, the bootloader, and fastbootd again during the update: \(result.stderr)")

        // The update went to slot b (made active above) and through fastbootd for system and vendor.
        let update = try String(contentsOfFile: work + "/update.json", encoding: .utf8)
        XCTAssertTrue(update.contains("\"type\":\"flash_completed\""), update)
        XCTAssertEqual(device.partition("boot_b"), try Data(contentsOf: URL(fileURLWithPath: work + "/zip/boot.img")))
        XCTAssertEqual(device.partition("system_b"), try Data(contentsOf: URL(fileURLWithPath: work + "/zip/system.img")))
        XCTAssertEqual(device.partition("vendor_b"), try Data(contentsOf: URL(fileURLWithPath: work + "/zip/vendor.img")))
        XCTAssertEqual(device.partition("system_a"), Data(), "the other slot's logical partitions are reset")
    }
}
