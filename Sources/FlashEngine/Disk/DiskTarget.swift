#if canImport(Glibc)
import Glibc
#endif

/// One place an image is written to: a block device (with what the system says about it) or a
/// regular file standing in for a disk.
public struct DiskTarget: Sendable, Equatable {
    public var path: String
    /// nil for a regular file.
    public var disk: DiskInfo?

    public var isBlockDevice: Bool { disk != nil }
    public var size: Int64? { disk?.size }

    /// What a person reads before saying yes: "/dev/sdb: SanDisk Ultra, 29.7 GiB, usb, serial 4C53...".
    public var summary: String {
        guard let disk else { return "\(path): a regular file" }
        var parts = [disk.description, ByteCountText.binary(disk.size), disk.transport]
        if let serial = disk.serial { parts.append("serial \(serial)") }
        if disk.isMounted { parts.append("mounted at \(disk.mountPoints.joined(separator: ", "))") }
        return "\(path): " + parts.joined(separator: ", ")
    }

    /// Finds what `path` is; refuses what cannot be a target at all (missing, a directory, a
    /// character device).
    public static func resolve(_ path: String, discovery: DiskDiscovery = DiskDiscovery()) throws -> DiskTarget {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw FlashError(.deviceSelection, "no disk or file at \(path)")
        }
        switch status.st_mode & S_IFMT {
        case S_IFBLK:
            guard let disk = discovery.disk(atPath: path) else {
                throw FlashError(.deviceSelection, "\(path) is a block device the system does not describe (no entry in /sys)")
            }
            return DiskTarget(path: disk.path, disk: disk)
        case S_IFREG:
            return DiskTarget(path: path, disk: nil)
        default:
            throw FlashError(.deviceSelection, "\(path) is neither a disk nor a regular file")
        }
    }

    /// Why writing `imageSize` bytes here would be a mistake; empty when it is safe. `--force`
    /// overrides these; a read-only device is refused regardless (see `hardRefusal`).
    public func refusals(imageSize: Int64?) -> [String] {
        guard let disk else { return [] }
        var reasons: [String] = []
        if let parent = disk.partitionOf {
            reasons.append("\(path) is a partition of /dev/\(parent): write the whole disk")
        }
        if disk.holdsSystem {
            reasons.append("\(path) holds the running system (\(disk.mountPoints.joined(separator: ", ")))")
        } else if disk.isMounted {
            let commands = disk.mountPoints.map { "umount '\($0)'" }.joined(separator: "; ")
            reasons.append("\(path) is mounted at \(disk.mountPoints.joined(separator: ", ")): unmount it first (\(commands))")
        }
        if !disk.isRemovable {
            reasons.append("\(path) is not a removable disk (\(disk.transport), \(disk.description))")
        }
        if let imageSize, imageSize > disk.size {
            reasons.append("the image (\(ByteCountText.binary(imageSize)), \(imageSize) bytes) is larger than \(path) (\(ByteCountText.binary(disk.size)), \(disk.size) bytes)")
        }
        return reasons
    }

    /// Whether telling a person that `--force` writes anyway would mislead: a mounted disk is
    /// held by the kernel (the exclusive open fails), and writing the system's disk destroys it.
    public var forceIsNoAnswer: Bool {
        disk.map { $0.holdsSystem || $0.isMounted } ?? false
    }

    /// A refusal `--force` cannot override.
    public var hardRefusal: String? {
        disk?.readOnly == true ? "\(path) is read-only (write-protect switch?)" : nil
    }
}
