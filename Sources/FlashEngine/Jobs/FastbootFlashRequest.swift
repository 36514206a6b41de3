/// What to flash where, as a user asked for it: one image to one partition (the CLI, the API),
/// or, for an auto-flash profile, partitions to erase first and further images after the first.
public struct FastbootFlashRequest: Sendable {
    /// One more image for one more partition, flashed after `imagePath`, in order.
    public struct ExtraImage: Sendable, Equatable {
        public var imagePath: String
        /// nil takes it from the image's file name, as for the first image.
        public var partition: String?

        public init(imagePath: String, partition: String? = nil) {
            self.imagePath = imagePath
            self.partition = partition
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

    public init(imagePath: String, partition: String? = nil, device: DeviceSelector? = nil, reboot: Bool = false, timeouts: FastbootTimeouts = FastbootTimeouts(),
                erase: [String] = [], extraImages: [ExtraImage] = [], bmapPath: String? = nil, noBmap: Bool = false, entry: String? = nil) {
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

    /// Every (partition, image path) this request flashes, in order; the first is `imagePath`.
    public func resolvedImages() throws -> [(partition: String, imagePath: String)] {
        let first = (partition: try resolvedPartition(), imagePath: imagePath)
        return try [first] + extraImages.map { extra in
            (partition: try FastbootFlashRequest(imagePath: extra.imagePath, partition: extra.partition).resolvedPartition(), imagePath: extra.imagePath)
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
