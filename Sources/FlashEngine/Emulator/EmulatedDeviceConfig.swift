/// How an emulated fastboot device behaves: identity, limits, speed and injected faults.
public struct EmulatedDeviceConfig: Sendable {
    /// Partitions are files `directory/NAME.img`.
    public var directory: String
    public var serial: String
    /// `getvar:product`, what a factory image's `require board=` is checked against.
    public var product: String
    /// A/B slots: partitions other than `unslottedPartitions` are `NAME_a` and `NAME_b`.
    public var slotted: Bool
    public var versionBootloader: String
    public var versionBaseband: String
    public var maxDownloadSize: Int64
    /// Download speed cap in bytes per second; 0 means as fast as possible.
    public var speedLimit: Int64
    public var faults: EmulatedFaults
    /// The fastboot protocol version reported by `getvar:version`.
    public var version: String

    /// The partitions an A/B device has once, as Pixels do.
    public static let unslottedPartitions: Set<String> = ["userdata", "metadata", "misc", "super", "frp", "persist", "cache"]

    public init(
        directory: String, serial: String, product: String = "flashctl-emulator", maxDownloadSize: Int64 = 256 << 20,
        speedLimit: Int64 = 0, faults: EmulatedFaults = EmulatedFaults(), version: String = "0.4",
        slotted: Bool = false, versionBootloader: String = "emu-bootloader-1.0", versionBaseband: String = "emu-baseband-1.0"
    ) {
        self.directory = directory
        self.serial = serial
        self.product = product
        self.slotted = slotted
        self.versionBootloader = versionBootloader
        self.versionBaseband = versionBaseband
        self.maxDownloadSize = maxDownloadSize
        self.speedLimit = speedLimit
        self.faults = faults
        self.version = version
    }
}

/// Failures to inject, for trying error handling without a broken device.
public struct EmulatedFaults: Sendable {
    public struct Failure: Sendable {
        /// Commands starting with this text fail ("flash:boot", "download").
        public var commandPrefix: String
        public var message: String

        public init(commandPrefix: String, message: String) {
            self.commandPrefix = commandPrefix
            self.message = message
        }
    }

    public var failures: [Failure]
    /// Commands starting with one of these are never answered.
    public var stallPrefixes: [String]
    /// The connection drops once this many download bytes have arrived in one connection.
    public var disconnectAfterBytes: Int64?
    /// The device stops reading (the host's sends block; the connection stays open) once this many
    /// download bytes have arrived in one connection.
    public var stopReadingAfterBytes: Int64?

    public init(failures: [Failure] = [], stallPrefixes: [String] = [], disconnectAfterBytes: Int64? = nil, stopReadingAfterBytes: Int64? = nil) {
        self.failures = failures
        self.stallPrefixes = stallPrefixes
        self.disconnectAfterBytes = disconnectAfterBytes
        self.stopReadingAfterBytes = stopReadingAfterBytes
    }
}
