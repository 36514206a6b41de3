import Foundation

/// Finds block devices through sysfs, `/proc/self/mountinfo` and `/proc/swaps` (the same
/// sources lsblk reads), and udev's properties (serial number, `ID_PATH`) as libudev reads them:
/// the device's sysfs `uevent` file, then udev's database over it.
public struct DiskDiscovery: Sendable {
    public var sysRoot: String
    public var mountInfoPath: String
    public var swapsPath: String
    public var udevDataRoot: String

    public init(sysRoot: String = "/sys", mountInfoPath: String = "/proc/self/mountinfo", swapsPath: String = "/proc/swaps", udevDataRoot: String = "/run/udev/data") {
        self.sysRoot = sysRoot
        self.mountInfoPath = mountInfoPath
        self.swapsPath = swapsPath
        self.udevDataRoot = udevDataRoot
    }

    /// Whole disks worth showing: not RAM disks, not unused loop devices, not device-mapper
    /// or optical drives.
    public func disks() -> [DiskInfo] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: sysRoot + "/block")) ?? []
        let mounts = MountTable(mountInfoPath: mountInfoPath, swapsPath: swapsPath)
        return names.sorted().compactMap { name in
            if name.hasPrefix("ram") || name.hasPrefix("zram") || name.hasPrefix("dm-") || name.hasPrefix("sr") || name.hasPrefix("md") { return nil }
            guard let disk = describe(name: name, sysPath: sysRoot + "/block/" + name, mounts: mounts) else { return nil }
            if disk.transport == "loop", disk.backingFile == nil { return nil }
            return disk
        }
    }

    /// The disk at `path` (`/dev/sdb`, a `/dev/disk/by-id/...` link, a partition), or nil when
    /// it is not a block device.
    public func disk(atPath path: String) -> DiskInfo? {
        var status = stat()
        guard stat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFBLK else { return nil }
        let number = deviceNumberText(status.st_rdev)
        let link = sysRoot + "/dev/block/" + number
        let real = URL(fileURLWithPath: link).resolvingSymlinksInPath().path
        let name = (real as NSString).lastPathComponent
        var disk = describe(name: name, sysPath: real, mounts: MountTable(mountInfoPath: mountInfoPath, swapsPath: swapsPath))
        disk?.path = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        return disk
    }

    private func describe(name: String, sysPath: String, mounts: MountTable) -> DiskInfo? {
        guard let number = read(sysPath + "/dev") else { return nil }
        let isPartition = FileManager.default.fileExists(atPath: sysPath + "/partition")
        let diskPath = isPartition ? (sysPath as NSString).deletingLastPathComponent : sysPath
        let real = URL(fileURLWithPath: diskPath).resolvingSymlinksInPath().path
        let sectors = Int64(read(sysPath + "/size") ?? "") ?? 0
        let transport: String
        if real.contains("/virtual/block/loop") { transport = "loop" }
        else if real.contains("/usb") { transport = "usb" }
        else if real.contains("/mmc") { transport = "mmc" }
        else if real.contains("/nvme") { transport = "nvme" }
        else if real.contains("/virtio") { transport = "virtio" }
        else if real.contains("/ata") { transport = "ata" }
        else { transport = "other" }
        let related = relatedDevices(sysPath)
        let points = related.flatMap { mounts.mountPoints(of: $0) }
        let udev = udevProperties(number, sysPath: diskPath)
        return DiskInfo(
            path: "/dev/" + name, name: name, deviceNumber: number, size: sectors * 512,
            model: read(diskPath + "/device/model") ?? read(diskPath + "/device/name") ?? udev["ID_MODEL"],
            vendor: (read(diskPath + "/device/vendor").flatMap { $0.hasPrefix("0x") ? nil : $0 }) ?? udev["ID_VENDOR"],
            serial: udev["ID_SERIAL_SHORT"] ?? read(diskPath + "/device/serial") ?? read(diskPath + "/serial"),
            transport: transport,
            removableFlag: read(diskPath + "/removable") == "1",
            readOnly: read(sysPath + "/ro") == "1",
            mountPoints: Array(Set(points)).sorted(),
            holdsSystem: points.contains { MountTable.systemMountPoints.contains($0) || $0 == "[swap]" },
            backingFile: read(diskPath + "/loop/backing_file"),
            logicalBlockSize: Int(read(diskPath + "/queue/logical_block_size") ?? "") ?? 512,
            partitionOf: isPartition ? (diskPath as NSString).lastPathComponent : nil,
            portPath: udev["ID_PATH"]
        )
    }

    /// The device and everything on it: its partitions and their holders (LVM, dm-crypt), as
    /// "MAJOR:MINOR" numbers.
    private func relatedDevices(_ sysPath: String) -> [String] {
        var numbers: [String] = []
        var pending = [sysPath]
        var seen: Set<String> = []
        while let path = pending.popLast() {
            let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            guard seen.insert(real).inserted, let number = read(real + "/dev") else { continue }
            numbers.append(number)
            let children = (try? FileManager.default.contentsOfDirectory(atPath: real)) ?? []
            for child in children where FileManager.default.fileExists(atPath: real + "/" + child + "/partition") {
                pending.append(real + "/" + child)
            }
            for holder in (try? FileManager.default.contentsOfDirectory(atPath: real + "/holders")) ?? [] {
                pending.append(sysRoot + "/class/block/" + holder)
            }
        }
        return numbers
    }

    private func udevProperties(_ number: String, sysPath: String) -> [String: String] {
        var properties: [String: String] = [:]
        if let uevent = try? String(contentsOfFile: sysPath + "/uevent", encoding: .utf8) {
            for line in uevent.split(separator: "\n") {
                let pair = line.split(separator: "=", maxSplits: 1)
                if pair.count == 2 { properties[String(pair[0])] = String(pair[1]) }
            }
        }
        if let database = try? String(contentsOfFile: udevDataRoot + "/b" + number, encoding: .utf8) {
            for line in database.split(separator: "\n") where line.hasPrefix("E:") {
                let pair = line.dropFirst(2).split(separator: "=", maxSplits: 1)
                if pair.count == 2 { properties[String(pair[0])] = String(pair[1]) }
            }
        }
        return properties
    }

    private func read(_ path: String) -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? nil : trimmed
    }
}

/// Mount points and active swap by device number.
struct MountTable {
    static let systemMountPoints: Set<String> = ["/", "/boot", "/boot/efi", "/usr", "/var", "/home"]
    private var byDevice: [String: [String]] = [:]

    init(mountInfoPath: String, swapsPath: String) {
        let text = (try? String(contentsOfFile: mountInfoPath, encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { continue }
            byDevice[String(fields[2]), default: []].append(Self.unescape(String(fields[4])))
        }
        let swaps = (try? String(contentsOfFile: swapsPath, encoding: .utf8)) ?? ""
        for line in swaps.split(separator: "\n").dropFirst() {
            guard let device = line.split(separator: " ").first else { continue }
            var status = stat()
            if stat(String(device), &status) == 0, (status.st_mode & S_IFMT) == S_IFBLK {
                byDevice[deviceNumberText(status.st_rdev), default: []].append("[swap]")
            }
        }
    }

    func mountPoints(of number: String) -> [String] {
        byDevice[number] ?? []
    }

    /// mountinfo writes spaces and some other bytes as \ooo.
    private static func unescape(_ text: String) -> String {
        guard text.contains("\\") else { return text }
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3, let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// "MAJOR:MINOR" of a device number, as sysfs and mountinfo write it (glibc's encoding).
func deviceNumberText(_ device: dev_t) -> String {
    let value = UInt64(device)
    let major = ((value >> 8) & 0xFFF) | ((value >> 32) & ~UInt64(0xFFF))
    let minor = (value & 0xFF) | ((value >> 12) & ~UInt64(0xFF))
    return "\(major):\(minor)"
}
