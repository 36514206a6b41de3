/// A block device that could be written: what the system says about it.
public struct DiskInfo: Sendable, Equatable {
    /// `/dev/sdb`.
    public var path: String
    /// `sdb`.
    public var name: String
    /// "MAJOR:MINOR".
    public var deviceNumber: String
    public var size: Int64
    public var model: String?
    public var vendor: String?
    public var serial: String?
    /// usb, mmc, loop, nvme, virtio, ata, or other.
    public var transport: String
    /// The kernel's removable flag.
    public var removableFlag: Bool
    public var readOnly: Bool
    /// Where the disk, its partitions or what is built on them (LVM, dm-crypt) are mounted, and swap in use.
    public var mountPoints: [String]
    /// True when the disk holds `/`, `/boot`, `/usr` or swap in use: the running system.
    public var holdsSystem: Bool
    /// A loop device's backing file.
    public var backingFile: String?
    /// The device's logical block size: writes that bypass the cache are aligned to it.
    public var logicalBlockSize: Int
    /// Set when this is a partition of another disk (that disk's name).
    public var partitionOf: String?
    /// udev's `ID_PATH`: the port the disk hangs on (a card reader's slot), stable across
    /// insertions, e.g. `pci-0000:00:14.0-usb-0:1.2:1.0-scsi-0:0:0:0`.
    public var portPath: String? = nil

    public init(path: String, name: String, deviceNumber: String, size: Int64, model: String?, vendor: String?, serial: String?, transport: String,
                removableFlag: Bool, readOnly: Bool, mountPoints: [String], holdsSystem: Bool, backingFile: String?, logicalBlockSize: Int,
                partitionOf: String?, portPath: String? = nil) {
        self.path = path
        self.name = name
        self.deviceNumber = deviceNumber
        self.size = size
        self.model = model
        self.vendor = vendor
        self.serial = serial
        self.transport = transport
        self.removableFlag = removableFlag
        self.readOnly = readOnly
        self.mountPoints = mountPoints
        self.holdsSystem = holdsSystem
        self.backingFile = backingFile
        self.logicalBlockSize = logicalBlockSize
        self.partitionOf = partitionOf
        self.portPath = portPath
    }

    /// Removable media as a person means it: the kernel's flag, USB and SD/MMC disks, and loop
    /// devices (backed by a file, never a disk the system runs from).
    public var isRemovable: Bool {
        removableFlag || transport == "usb" || transport == "mmc" || transport == "loop"
    }

    public var isMounted: Bool { !mountPoints.isEmpty }

    /// The medium as its serial and size ("4C530001230905117012/31914983424"); nil without a
    /// serial. A card reader may report its own serial for every card, so two cards of one size
    /// in one reader look alike.
    public var medium: String? {
        serial.map { "\($0)/\(size)" }
    }

    /// "SanDisk Ultra" or the transport when the device has no model.
    public var description: String {
        let label = [vendor, model].compactMap { $0 }.joined(separator: " ")
        return label.isEmpty ? (backingFile.map { "loop device on \($0)" } ?? "\(transport) disk") : label
    }
}
