@testable import FlashEngine
import Foundation
import XCTest

/// Disk discovery over a made-up sysfs tree and mount table shaped like a laptop's: the system
/// disk (with LVM on a partition), a USB stick with a mounted partition, an SD card, a loop
/// device with a backing file and an unused one.
final class DiskDiscoveryTests: XCTestCase {
    private var root = ""

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-sysfs-\(UUID().uuidString)").path
        let usb = "devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/host6/target6:0:0/6:0:0:0/block/sdb"
        let ata = "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda"
        let mmc = "devices/pci0000:00/0000:00:1e.6/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0"
        try disk(ata, dev: "8:0", sectors: 1_000_215_216, removable: "0", model: "Samsung SSD 860", vendor: "ATA")
        try partition(ata + "/sda1", dev: "8:1")
        try partition(ata + "/sda2", dev: "8:2", holders: ["dm-0"])
        try write("devices/virtual/block/dm-0/dev", "253:0")
        try link("class/block/dm-0", to: "devices/virtual/block/dm-0")
        try disk(usb, dev: "8:16", sectors: 62_333_952, removable: "1", model: "Ultra", vendor: "SanDisk")
        try partition(usb + "/sdb1", dev: "8:17")
        try disk(mmc, dev: "179:0", sectors: 31_116_288, removable: "0", model: nil, vendor: nil)
        try write(mmc + "/device/name", "SD32G")
        try write(mmc + "/device/serial", "0x1234abcd")
        try disk("devices/virtual/block/loop0", dev: "7:0", sectors: 131_072, removable: "0", model: nil, vendor: nil)
        try write("devices/virtual/block/loop0/loop/backing_file", "/srv/images/disk.img")
        try disk("devices/virtual/block/loop1", dev: "7:1", sectors: 0, removable: "0", model: nil, vendor: nil)
        try write("mountinfo", """
            27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
            28 27 253:0 / /home rw,relatime - ext4 /dev/mapper/vg-home rw
            29 27 8:17 / /media/user/MY\\040STICK rw,nosuid - vfat /dev/sdb1 rw
            """)
        try write("swaps", "Filename\tType\tSize\tUsed\tPriority\n")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: root)
    }

    func testDisksAreDescribedWithWhatDecidesWhetherTheyMayBeWritten() throws {
        let disks = DiskDiscovery(sysRoot: root + "/sys", mountInfoPath: root + "/mountinfo", swapsPath: root + "/swaps", udevDataRoot: root + "/udev").disks()
        XCTAssertEqual(disks.map(\.name), ["loop0", "mmcblk0", "sda", "sdb"], "unused loop devices are not shown")

        let system = try XCTUnwrap(disks.first { $0.name == "sda" })
        XCTAssertTrue(system.holdsSystem)
        XCTAssertEqual(system.mountPoints, ["/", "/home"], "LVM on a partition counts as the disk's")
        XCTAssertFalse(system.isRemovable)
        XCTAssertEqual(system.transport, "ata")
        XCTAssertEqual(system.description, "ATA Samsung SSD 860")

        let stick = try XCTUnwrap(disks.first { $0.name == "sdb" })
        XCTAssertEqual(stick.transport, "usb")
        XCTAssertTrue(stick.isRemovable)
        XCTAssertEqual(stick.mountPoints, ["/media/user/MY STICK"])
        XCTAssertFalse(stick.holdsSystem)
        XCTAssertEqual(stick.size, 62_333_952 * 512)

        let card = try XCTUnwrap(disks.first { $0.name == "mmcblk0" })
        XCTAssertEqual(card.transport, "mmc")
        XCTAssertTrue(card.isRemovable, "SD cards are removable media even when the kernel flag says 0")
        XCTAssertEqual(card.model, "SD32G")
        XCTAssertEqual(card.serial, "0x1234abcd")

        let loop = try XCTUnwrap(disks.first { $0.name == "loop0" })
        XCTAssertEqual(loop.backingFile, "/srv/images/disk.img")
        XCTAssertEqual(loop.description, "loop device on /srv/images/disk.img")
    }

    func testRefusalsNameEveryReasonAndForceIsNeededForThem() throws {
        let disks = DiskDiscovery(sysRoot: root + "/sys", mountInfoPath: root + "/mountinfo", swapsPath: root + "/swaps", udevDataRoot: root + "/udev").disks()
        let system = DiskTarget(path: "/dev/sda", disk: try XCTUnwrap(disks.first { $0.name == "sda" }))
        let reasons = system.refusals(imageSize: 4 << 30)
        XCTAssertTrue(reasons.contains { $0.contains("holds the running system") }, "\(reasons)")
        XCTAssertTrue(reasons.contains { $0.contains("not a removable disk") }, "\(reasons)")
        XCTAssertTrue(system.forceIsNoAnswer, "--force is never suggested for the system's disk")

        let stick = DiskTarget(path: "/dev/sdb", disk: try XCTUnwrap(disks.first { $0.name == "sdb" }))
        let stickReasons = stick.refusals(imageSize: 64 << 30)
        XCTAssertTrue(stickReasons.contains { $0.contains("mounted at /media/user/MY STICK: unmount it first (umount '/media/user/MY STICK')") }, "\(stickReasons)")
        XCTAssertTrue(stick.forceIsNoAnswer, "a mounted disk needs umount, not --force")
        XCTAssertTrue(stickReasons.contains { $0.contains("larger than /dev/sdb") }, "\(stickReasons)")

        let card = DiskTarget(path: "/dev/mmcblk0", disk: try XCTUnwrap(disks.first { $0.name == "mmcblk0" }))
        XCTAssertEqual(card.refusals(imageSize: 1 << 30), [])
        XCTAssertFalse(card.forceIsNoAnswer)
        XCTAssertEqual(card.refusals(imageSize: nil), [], "an unknown size is checked while writing")
    }

    // MARK: the made-up tree

    private func disk(_ path: String, dev: String, sectors: Int, removable: String, model: String?, vendor: String?) throws {
        try write(path + "/dev", dev)
        try write(path + "/size", "\(sectors)")
        try write(path + "/removable", removable)
        try write(path + "/ro", "0")
        try write(path + "/queue/logical_block_size", "512")
        if let model { try write(path + "/device/model", model) }
        if let vendor { try write(path + "/device/vendor", vendor) }
        let name = (path as NSString).lastPathComponent
        try link("block/" + name, to: path)
        try link("class/block/" + name, to: path)
    }

    private func partition(_ path: String, dev: String, holders: [String] = []) throws {
        try write(path + "/dev", dev)
        try write(path + "/partition", "1")
        try FileManager.default.createDirectory(atPath: root + "/sys/" + path + "/holders", withIntermediateDirectories: true)
        for holder in holders {
            try link((path as NSString).appendingPathComponent("holders/" + holder), to: "devices/virtual/block/" + holder)
        }
    }

    private func write(_ relative: String, _ text: String) throws {
        let path = relative == "mountinfo" || relative == "swaps" ? root + "/" + relative : root + "/sys/" + relative
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try (text + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    private func link(_ relative: String, to target: String) throws {
        let path = root + "/sys/" + relative
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: root + "/sys/" + target)
    }
}
