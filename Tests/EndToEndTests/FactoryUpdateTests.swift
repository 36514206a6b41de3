import Foundation
import XCTest

/// `flashctl update ZIP` against `fastboot update ZIP` on twin emulated devices with A/B slots.
final class FactoryUpdateTests: XCTestCase {
    private var emulators: [EmulatorProcess] = []
    private var work = ""

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-update-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    override func tearDown() {
        emulators.forEach { $0.stop() }
        emulators = []
        try? FileManager.default.removeItem(atPath: work)
    }

    private func emulator(_ serial: String) throws -> EmulatorProcess {
        let device = try EmulatorProcess(serial: serial, extraArguments: ["--slots"])
        emulators.append(device)
        return device
    }

    private func factoryZip(board: String = "flashctl-emulator", images: [String: Int], superPartitions: [String] = []) throws -> String {
        try FactoryZip.make(in: work + "/\(UUID().uuidString)", board: board, images: images, superPartitions: superPartitions)
    }

    private func partitions(_ device: EmulatorProcess) throws -> [String: Data] {
        var found: [String: Data] = [:]
        for file in try FileManager.default.contentsOfDirectory(atPath: device.directory) where file.hasSuffix(".img") && !file.hasPrefix(".") {
            found[String(file.dropLast(4))] = FileManager.default.contents(atPath: device.directory + "/" + file)
        }
        return found
    }

    private func currentSlot(_ device: EmulatorProcess) throws -> String {
        try ProcessRunner.run(ProcessRunner.flashctl, ["getvar", "--device", device.tcpSelector, "current-slot"]).stdout
    }

    private let images = ["boot": 300_000, "dtbo": 40_000, "vbmeta": 8_192, "vendor_boot": 120_000, "system": 900_000, "vendor": 500_000]

    func testUpdateLeavesTheDeviceAsFastbootUpdateDoesInOneJob() throws {
        let zip = try factoryZip(images: images)
        for slot in [nil, "b"] as [String?] {
            let ours = try emulator("OURS"), theirs = try emulator("THEIRS")
            let slotArguments = slot.map { ["--slot", $0] } ?? []
            let aosp = try ProcessRunner.run("/usr/bin/fastboot", ["-s", theirs.tcpSelector] + slotArguments + ["update", zip])
            XCTAssertEqual(aosp.status, 0, aosp.stderr)
            let result = try ProcessRunner.run(ProcessRunner.flashctl, ["update", "--device", ours.tcpSelector] + slotArguments + ["--json", zip])
            XCTAssertEqual(result.status, 0, result.stderr)

            let written = try partitions(ours)
            XCTAssertEqual(Set(written.keys), Set(images.keys.map { $0 + "_" + (slot ?? "a") }), "slot \(slot ?? "current")")
            XCTAssertEqual(written, try partitions(theirs), "slot \(slot ?? "current"): the partitions differ from fastboot update's")
            XCTAssertEqual(try currentSlot(ours), try currentSlot(theirs))
            XCTAssertEqual(try currentSlot(ours), "current-slot: \(slot ?? "a")\n")

            // One job: one start, one end, progress over every image's bytes, a stage per step.
            XCTAssertEqual(result.events.compactMap { $0["type"] as? String }.filter { $0 != "flash_progress" }, ["flash_started", "flash_completed"])
            let progress = result.events(ofType: "flash_progress")
            let percents = progress.compactMap { $0["progress"] as? Double }
            XCTAssertEqual(percents, percents.sorted())
            XCTAssertEqual(progress.last?["totalBytes"] as? Int, images.values.reduce(0, +))
            let stages = Set(progress.compactMap(\.stageName))
            XCTAssertTrue(stages.isSubset(of: Set(["Connecting", "Checking the device against android-info.txt", "Rebooting"] + (slot.map { ["Activating slot \($0)"] } ?? [])
                + ["boot", "dtbo", "vbmeta", "vendor_boot", "system", "vendor"].enumerated().flatMap { index, name in
                    ["Sending", "Writing"].map { "\($0) \(name)_\(slot ?? "a") (\(index + 1)/6)" }
                })), "\(stages)")
            ours.stop(); theirs.stop()
        }
    }

    func testDynamicPartitionsAreWrittenFromFastbootdAsFastbootUpdateWritesThem() throws {
        // A bootloader image rides along, as in vendors' zips; 'fastboot update' leaves it alone
        // (it is flashed from the factory package's script), and so does flashctl.
        let zip = try factoryZip(images: ["bootloader": 60_000, "boot": 200_000, "vendor_boot": 90_000, "system": 700_000, "vendor": 300_000], superPartitions: ["system", "vendor"])
        let ours = try emulator("OURS"), theirs = try emulator("THEIRS")
        let aosp = try ProcessRunner.run("/usr/bin/fastboot", ["-s", theirs.tcpSelector, "update", zip])
        XCTAssertEqual(aosp.status, 0, aosp.stderr)
        XCTAssertTrue(aosp.stderr.contains("Updating super partition"), aosp.stderr)
        let result = try ProcessRunner.run(ProcessRunner.flashctl, ["update", "-d", ours.tcpSelector, "--json", zip])
        XCTAssertEqual(result.status, 0, result.stderr)

        // boot and vendor_boot from the bootloader; system and vendor, logical, from fastbootd,
        // each sized to its image; the other slot's logical partitions reset to empty.
        let written = try partitions(ours)
        XCTAssertEqual(Set(written.keys), ["boot_a", "vendor_boot_a", "system_a", "vendor_a", "system_b", "vendor_b"])
        XCTAssertEqual(written, try partitions(theirs), "the partitions differ from fastboot update's")
        XCTAssertEqual(written["system_b"], Data())
        XCTAssertEqual(try currentSlot(ours), try currentSlot(theirs))
        let back = try ProcessRunner.run(ProcessRunner.flashctl, ["getvar", "-d", ours.tcpSelector, "is-userspace"])
        XCTAssertEqual(back.stdout, "is-userspace: no\n", "the device rebooted out of fastbootd at the end")
        XCTAssertEqual(result.events.compactMap { $0["type"] as? String }.filter { $0 != "flash_progress" }, ["flash_started", "flash_completed"])
    }

    func testADeviceOfAnotherBoardIsRefusedBeforeAnythingIsWritten() throws {
        let zip = try factoryZip(board: "raven|bluejay", images: ["boot": 4096, "system": 8192])
        let device = try emulator("OTHER")
        let result = try ProcessRunner.run(ProcessRunner.flashctl, ["update", "--device", device.tcpSelector, zip])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue((result.stderr + result.stdout).contains("board is 'flashctl-emulator', this image is for board raven or bluejay"), result.stderr + result.stdout)
        XCTAssertEqual(try partitions(device), [:], "nothing was written")
    }

    func testWipeSkipRebootAndZipsThatAreNotFactoryImages() throws {
        let device = try emulator("WIPE")
        FileManager.default.createFile(atPath: device.directory + "/userdata.img", contents: Data(repeating: 5, count: 65_536))
        let zip = try factoryZip(images: ["boot": 4096])
        let result = try ProcessRunner.run(ProcessRunner.flashctl, ["update", "--device", device.tcpSelector, "--wipe", "--skip-reboot", "--json", zip])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(device.partition("userdata"), Data(), "userdata was wiped")
        let stages = result.events(ofType: "flash_progress").compactMap(\.stageName)
        XCTAssertFalse(stages.contains("Rebooting"), "\(stages)")

        let plain = work + "/plain.zip"
        try "hello".write(toFile: work + "/readme.txt", atomically: true, encoding: .utf8)
        XCTAssertEqual(try ProcessRunner.run("/usr/bin/zip", ["-q", "-j", plain, work + "/readme.txt"]).status, 0)
        let refused = try ProcessRunner.run(ProcessRunner.flashctl, ["update", "--device", device.tcpSelector, plain])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("is not a factory image: it holds no android-info.txt"), refused.stderr)
        let missing = try ProcessRunner.run(ProcessRunner.flashctl, ["update", "--device", device.tcpSelector, work + "/nothere.zip"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.stderr, "flashctl: error: image not found: \(work)/nothere.zip\n")
    }
}
