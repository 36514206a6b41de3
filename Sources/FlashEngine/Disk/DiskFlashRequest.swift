/// Whether a `--device` or `deviceId` names a disk (or a file standing in for one) rather than a
/// fastboot device: disks are named by path.
public func isDiskPath(_ device: String) -> Bool {
    device.hasPrefix("/") || device.hasPrefix("./") || device.hasPrefix("../")
}

/// What to write where: one image to one or more disks.
public struct DiskFlashRequest: Sendable {
    public var imagePath: String
    public var targets: [String]
    public var bmapPath: String?
    public var noBmap: Bool
    public var entry: String?
    /// Write even to targets `DiskTarget.refusals` objects to (the CLI's `--force`; never the API).
    public var force: Bool
    /// Read everything back and compare (on by default, as people expect of a disk writer).
    public var verify: Bool
    /// Each target's `DiskInfo.confirmationToken` as a person saw it (the API and the dashboard
    /// ask for it); every target must then be a disk that still has that token. nil: not asked
    /// for (the CLI asks the person at the terminal instead).
    public var confirmations: [String: String]?
    /// Whether a refusal may tell the person that `--force` writes anyway (the CLI).
    public var offersForce: Bool = false

    public init(imagePath: String, targets: [String], bmapPath: String? = nil, noBmap: Bool = false, entry: String? = nil, force: Bool = false, verify: Bool = true,
                confirmations: [String: String]? = nil) {
        self.confirmations = confirmations
        self.imagePath = imagePath
        self.targets = targets
        self.bmapPath = bmapPath
        self.noBmap = noBmap
        self.entry = entry
        self.force = force
        self.verify = verify
    }
}
