import Foundation
import XCTest

/// `flashctl getvar`, `erase`, `reboot`, `set-active`, `oem`, `flashing` and `boot`, each held
/// against AOSP fastboot doing the same to a twin emulated device: the devices must end up alike.
final class FastbootCommandsTests: XCTestCase {
    private var emulators: [EmulatorProcess] = []

    override func tearDown() {
        emulators.forEach { $0.stop() }
        emulators = []
    }

    private func twins(_ arguments: [String] = ["--slots"]) throws -> (ours: EmulatorProcess, theirs: EmulatorProcess) {
        let ours = try EmulatorProcess(serial: "OURS", extraArguments: arguments)
        let theirs = try EmulatorProcess(serial: "THEIRS", extraArguments: arguments)
        emulators += [ours, theirs]
        return (ours, theirs)
    }

    private func flashctl(_ device: EmulatorProcess, _ arguments: [String], stdin: String? = nil) throws -> CommandResult {
        try ProcessRunner.run(ProcessRunner.flashctl, [arguments[0], "--device", device.tcpSelector] + arguments.dropFirst(), stdin: stdin)
    }

    private func fastboot(_ device: EmulatorProcess, _ arguments: [String]) throws -> CommandResult {
        try ProcessRunner.run("/usr/bin/fastboot", ["-s", device.tcpSelector] + arguments)
    }

    /// `getvar NAME` as AOSP fastboot prints it (on stderr: "NAME: VALUE").
    private func fastbootVariable(_ device: EmulatorProcess, _ name: String) throws -> String {
        let result = try fastboot(device, ["getvar", name])
        XCTAssertEqual(result.status, 0, result.stderr)
        let line = result.stderr.split(separator: "\n").first { $0.hasPrefix("\(name):") } ?? ""
        return line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)
    }

    func testGetvarPrintsWhatFastbootPrints() throws {
        let (ours, _) = try twins()
        FileManager.default.createFile(atPath: ours.directory + "/boot_a.img", contents: Data(count: 4096))
        let all = try flashctl(ours, ["getvar", "all"])
        XCTAssertEqual(all.status, 0, all.stderr)
        // AOSP fastboot prints each variable as "(bootloader) NAME:VALUE" on stderr.
        let theirs = try fastboot(ours, ["getvar", "all"])
        let expected = theirs.stderr.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("(bootloader) ") else { return nil }
            let text = line.dropFirst("(bootloader) ".count)
            guard let colon = text.lastIndex(of: ":") else { return nil }
            return "\(text[..<colon]): \(text[text.index(after: colon)...])"
        }
        XCTAssertGreaterThan(expected.count, 10, theirs.stderr)
        XCTAssertEqual(all.stdout.split(separator: "\n").map(String.init), expected)
        XCTAssertTrue(all.stdout.contains("partition-size:boot_a: 0x00001000"), all.stdout)

        let one = try flashctl(ours, ["getvar", "current-slot"])
        XCTAssertEqual(one.stdout, "current-slot: a\n")
        let json = try flashctl(ours, ["getvar", "product", "--json"])
        XCTAssertEqual(json.stdout, "{\"product\":\"flashctl-emulator\"}\n")
        let unknown = try flashctl(ours, ["getvar", "no-such-variable"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("refused getvar:no-such-variable: unknown variable"), unknown.stderr)
    }

    func testSlotsEraseAndSetActiveEndAsWithFastboot() throws {
        let (ours, theirs) = try twins()
        for device in [ours, theirs] {
            for name in ["boot_a", "boot_b", "userdata"] {
                FileManager.default.createFile(atPath: device.directory + "/\(name).img", contents: Data(repeating: 9, count: 8192))
            }
        }
        // Erase the current slot's boot, then both slots', then an unslotted partition.
        XCTAssertEqual(try flashctl(ours, ["erase", "boot"]).stdout, "erased boot_a\n")
        XCTAssertEqual(try fastboot(theirs, ["erase", "boot"]).status, 0)
        XCTAssertEqual(ours.partition("boot_a"), theirs.partition("boot_a"))
        XCTAssertEqual(ours.partition("boot_b"), theirs.partition("boot_b"))
        XCTAssertEqual(ours.partition("boot_a"), Data())

        XCTAssertEqual(try flashctl(ours, ["set-active", "b"]).stdout, "active slot: b\n")
        XCTAssertEqual(try fastboot(theirs, ["set_active", "b"]).status, 0)
        XCTAssertEqual(try fastbootVariable(ours, "current-slot"), "b")
        XCTAssertEqual(try fastbootVariable(theirs, "current-slot"), "b")

        XCTAssertEqual(try flashctl(ours, ["erase", "--slot", "other", "userdata"]).stdout, "erased userdata\n")
        XCTAssertEqual(try fastboot(theirs, ["--slot", "other", "erase", "userdata"]).status, 0)
        let both = try flashctl(ours, ["erase", "--slot", "all", "boot"])
        XCTAssertEqual(both.stdout, "erased boot_a\nerased boot_b\n", both.stderr)
        XCTAssertEqual(try fastboot(theirs, ["--slot", "all", "erase", "boot"]).status, 0)
        for name in ["boot_a", "boot_b", "userdata"] {
            XCTAssertEqual(ours.partition(name), theirs.partition(name), name)
            XCTAssertEqual(ours.partition(name), Data(), name)
        }

        let bad = try flashctl(ours, ["set-active", "c"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("no slot 'c': say a, b, other or all"), bad.stderr)
        let noSlots = try EmulatorProcess(serial: "PLAIN")
        emulators.append(noSlots)
        let refused = try flashctl(noSlots, ["set-active", "b"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("refused set_active:b: this device has no slots"), refused.stderr)
    }

    func testFlashWritesTheSlotsFastbootWrites() throws {
        let (ours, theirs) = try twins()
        let image = ours.directory + "/../flashctl-slot-\(UUID().uuidString).img"
        try TestImages.random(200_000).write(to: URL(fileURLWithPath: image))
        defer { try? FileManager.default.removeItem(atPath: image) }
        // fastboot's habit (PARTITION IMAGE) in the current slot, then --slot b, then both.
        for slot in [nil, "b", "all"] as [String?] {
            let slotArguments = slot.map { ["--slot", $0] } ?? []
            let result = try flashctl(ours, ["flash"] + slotArguments + ["--json", "boot", image])
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertEqual(try fastboot(theirs, slotArguments + ["flash", "boot", image]).status, 0)
            for name in ["boot_a", "boot_b"] {
                XCTAssertEqual(ours.partition(name), theirs.partition(name), "\(name) after --slot \(slot ?? "none")")
            }
        }
        XCTAssertEqual(ours.partition("boot_b"), try Data(contentsOf: URL(fileURLWithPath: image)))
        XCTAssertNil(ours.partition("boot"), "a partition with slots is never written unsuffixed")
        let twice = try flashctl(ours, ["flash", "--partition", "boot", "boot", image])
        XCTAssertNotEqual(twice.status, 0)
        XCTAssertTrue(twice.stderr.contains("the partition is named twice"), twice.stderr)
    }

    func testCtrlCWhileTheDeviceErasesExitsWith130AndSaysSo() throws {
        let stalled = try EmulatorProcess(serial: "STALLED", extraArguments: ["--stall-on", "erase"])
        emulators.append(stalled)
        let erase = try RunningCommand(ProcessRunner.flashctl, ["erase", "-d", stalled.tcpSelector, "userdata"])
        usleep(500_000)
        erase.signal(SIGINT)
        XCTAssertEqual(erase.wait(timeout: 10), 130, erase.output)
        XCTAssertTrue(erase.output.contains("flashctl: cancelled while waiting for \(stalled.tcpSelector): it may or may not have done what it was asked"), erase.output)
    }

    func testRebootIntoFastbootdAndBackOemFlashingAndBoot() throws {
        let (ours, _) = try twins()
        XCTAssertEqual(try flashctl(ours, ["reboot", "fastboot"]).stdout, "rebooting into fastboot\n")
        XCTAssertEqual(try fastbootVariable(ours, "is-userspace"), "yes")
        XCTAssertEqual(try flashctl(ours, ["getvar", "is-userspace"]).stdout, "is-userspace: yes\n")
        XCTAssertEqual(try flashctl(ours, ["reboot", "bootloader"]).status, 0)
        XCTAssertEqual(try flashctl(ours, ["getvar", "is-userspace"]).stdout, "is-userspace: no\n")
        let nowhere = try flashctl(ours, ["reboot", "sideways"])
        XCTAssertNotEqual(nowhere.status, 0)
        XCTAssertTrue(nowhere.stderr.contains("reboot into system, bootloader, fastboot or recovery, not 'sideways'"), nowhere.stderr)

        let info = try flashctl(ours, ["oem", "device-info"])
        XCTAssertEqual(info.stdout, "Device unlocked: true\nCurrent slot: a\n", info.stderr)

        // Locking asks; without a terminal it needs --yes, and then the device refuses to flash.
        let unasked = try flashctl(ours, ["flashing", "lock"])
        XCTAssertNotEqual(unasked.status, 0)
        XCTAssertTrue(unasked.stderr.contains("not confirmed: the device was not locked"), unasked.stderr)
        XCTAssertEqual(try fastbootVariable(ours, "unlocked"), "yes")
        XCTAssertEqual(try flashctl(ours, ["flashing", "lock", "--yes"]).stdout, "locked\n")
        XCTAssertEqual(try fastbootVariable(ours, "unlocked"), "no")
        let locked = try flashctl(ours, ["erase", "boot"])
        XCTAssertNotEqual(locked.status, 0)
        XCTAssertTrue(locked.stderr.contains("Flashing is not allowed in Lock State"), locked.stderr)
        XCTAssertEqual(try flashctl(ours, ["flashing", "unlock", "--yes"]).stdout, "unlocked\n")

        let image = ours.directory + "/../flashctl-ram-boot-\(UUID().uuidString).img"
        let bytes = TestImages.random(300_000)
        try bytes.write(to: URL(fileURLWithPath: image))
        defer { try? FileManager.default.removeItem(atPath: image) }
        let boot = try flashctl(ours, ["boot", image])
        XCTAssertEqual(boot.status, 0, boot.stderr)
        XCTAssertEqual(FileManager.default.contents(atPath: ours.directory + "/.ram-boot.img"), bytes, "the device booted what was sent")
        XCTAssertEqual(ours.partition("boot_a"), nil, "and wrote nothing")
    }
}
