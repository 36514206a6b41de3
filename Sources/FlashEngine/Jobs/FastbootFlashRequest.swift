/// What to flash where, as a user asked for it.
public struct FastbootFlashRequest: Sendable {
    public var imagePath: String
    /// Partition to write; nil takes it from the image's file name ("system.img" -> "system").
    public var partition: String?
    /// nil means "the only fastboot device connected".
    public var device: DeviceSelector?
    /// Reboot the device once everything is written.
    public var reboot: Bool
    public var timeouts: FastbootTimeouts
    /// A bmaptool block map for a raw image; nil: `IMAGE.bmap` beside the image if there is one.
    public var bmapPath: String?
    /// Ignore a block map found beside the image.
    public var noBmap: Bool
    /// The file to flash from inside a zip holding several.
    public var entry: String?

    public init(imagePath: String, partition: String? = nil, device: DeviceSelector? = nil, reboot: Bool = false, timeouts: FastbootTimeouts = FastbootTimeouts(), bmapPath: String? = nil, noBmap: Bool = false, entry: String? = nil) {
        self.imagePath = imagePath
        self.partition = partition
        self.device = device
        self.reboot = reboot
        self.timeouts = timeouts
        self.bmapPath = bmapPath
        self.noBmap = noBmap
        self.entry = entry
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
