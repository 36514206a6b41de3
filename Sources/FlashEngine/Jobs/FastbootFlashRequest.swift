/// What to flash where, as a user asked for it: one image to one partition (the CLI, the API),
/// or, for an auto-flash profile, partitions to erase first and further images after the first.
public struct FastbootFlashRequest: Sendable {
    /// One more image for one more partition, flashed after `imagePath`, in order.
    public struct ExtraImage: Sendable, Equatable {
        public var imagePath: String
        /// nil takes it from the image's file name, as for the first image.
        public var partition: String?
        /// The file inside a zip at `imagePath`.
        public var entry: String?

        public init(imagePath: String, partition: String? = nil, entry: String? = nil) {
            self.imagePath = imagePath
            self.partition = partition
            self.entry = entry
        }
    }

    public var imagePath: String
    /// Partition to write; nil takes it from the image's file name ("system.img" -> "system").
    public var partition: String?
    /// nil means "the only fastboot device connected".
    public var device: DeviceSelector?
    /// Reboot the device once everything is written.
    public var reboot: Bool
    public var timeouts: FastbootTimeouts
    /// Partitions erased, in this order, before anything is flashed.
    public var erase: [String]
    /// Images flashed after the first one, in this order, in the same job.
    public var extraImages: [ExtraImage]
    /// A bmaptool block map for the (first) image; nil: `IMAGE.bmap` beside each image if there is one.
    public var bmapPath: String?
    /// Ignore block maps found beside the images.
    public var noBmap: Bool
    /// The file to flash from inside a zip holding several (the first image).
    public var entry: String?
    /// The A/B slot of each partition with slots (nil: the device's current slot), as AOSP
    /// fastboot's `--slot`; partitions without slots are written as named.
    public var slot: SlotChoice?
    /// Made the active slot after the checks, before anything is written (`update --slot`).
    public var activateSlot: String?
    /// What the device must be (a factory image's android-info.txt), checked before anything is written.
    public var requirements: AndroidInfo?
    /// Erase userdata, cache and metadata (those the device has) after flashing, as `fastboot -w`.
    public var wipe: Bool
    /// A factory image with dynamic partitions: from image `firstImage` on (0 is `imagePath`), the
    /// images are flashed from fastbootd, after the super metadata (`superMetadataEntry`, a file
    /// in the zip at `imagePath`) has been sent with `update-super`.
    public var userspace: UserspacePhase?

    public struct UserspacePhase: Sendable, Equatable {
        public var firstImage: Int
        public var superMetadataEntry: String

        public init(firstImage: Int, superMetadataEntry: String) {
            self.firstImage = firstImage
            self.superMetadataEntry = superMetadataEntry
        }
    }

    public init(imagePath: String, partition: String? = nil, device: DeviceSelector? = nil, reboot: Bool = false, timeouts: FastbootTimeouts = FastbootTimeouts(),
                erase: [String] = [], extraImages: [ExtraImage] = [], bmapPath: String? = nil, noBmap: Bool = false, entry: String? = nil,
                slot: SlotChoice? = nil, activateSlot: String? = nil, requirements: AndroidInfo? = nil, wipe: Bool = false,
                userspace: UserspacePhase? = nil) {
        self.userspace = userspace
        self.slot = slot
        self.activateSlot = activateSlot
        self.requirements = requirements
        self.wipe = wipe
        self.bmapPath = bmapPath
        self.noBmap = noBmap
        self.entry = entry
        self.imagePath = imagePath
        self.partition = partition
        self.device = device
        self.reboot = reboot
        self.timeouts = timeouts
        self.erase = erase
        self.extraImages = extraImages
    }

    /// Every (partition, image path, zip entry) this request flashes, in order; the first is `imagePath`.
    public func resolvedImages() throws -> [(partition: String, imagePath: String, entry: String?)] {
        let first = (partition: try resolvedPartition(), imagePath: imagePath, entry: entry)
        return try [first] + extraImages.map { extra in
            (partition: try FastbootFlashRequest(imagePath: extra.imagePath, partition: extra.partition).resolvedPartition(), imagePath: extra.imagePath, entry: extra.entry)
        }
    }

    /// The partitions to erase, each checked like a partition to flash.
    public func resolvedErasePartitions() throws -> [String] {
        try erase.map { try FastbootFlashRequest(imagePath: "", partition: $0).resolvedPartition() }
    }

    /// The partition this request writes.
    public func resolvedPartition() throws -> String {
        let name = try partition ?? Self.partitionName(fromImagePath: imagePath)
        guard !name.isEmpty, name.utf8.allSatisfy({ Self.partitionCharacters.contains($0) }), name.utf8.count <= 64 else {
            throw FlashError(.image, "'\(name)' is not a partition name (letters, digits, '_', '-' and '.' only)")
        }
        return name
    }

    /// "images/system.img" -> "system", "boot_a.img.zst" -> "boot_a".
    static func partitionName(fromImagePath path: String) throws -> String {
        let file = path.split(separator: "/").last.map(String.init) ?? path
        guard let base = file.split(separator: ".").first, !base.isEmpty else {
            throw FlashError(.image, "cannot tell the partition from the file name '\(file)'; give --partition")
        }
        return String(base)
    }

    private static let partitionCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.".utf8)
}
