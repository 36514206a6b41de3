import Synchronization

/// What an emulated device keeps across its connections, as a real one keeps it across reboots
/// (a reboot ends the connection): which fastboot it runs (the bootloader's or fastbootd, in
/// userspace), its active slot, whether it is unlocked, and its logical partitions (inside
/// `super`, known only to fastbootd).
public final class EmulatedDeviceState: Sendable {
    public enum Mode: String, Sendable {
        case bootloader
        /// Userspace fastboot (`is-userspace: yes`): the one that writes logical partitions.
        case fastbootd
    }

    struct Values {
        var mode: Mode = .bootloader
        var currentSlot: String
        var unlocked = true
        /// Logical partitions and their sizes.
        var logical: [String: Int64] = [:]
        /// How many times the device rebooted (each ends a connection).
        var reboots = 0
    }

    private let values: Mutex<Values>

    public init(slotted: Bool) {
        values = Mutex(Values(currentSlot: slotted ? "a" : ""))
    }

    public var mode: Mode { values.withLock { $0.mode } }
    public var currentSlot: String { values.withLock { $0.currentSlot } }
    public var isUnlocked: Bool { values.withLock { $0.unlocked } }
    public var logicalPartitions: [String: Int64] { values.withLock { $0.logical } }
    public var reboots: Int { values.withLock { $0.reboots } }

    func update<T>(_ body: (inout Values) -> T) -> T {
        values.withLock { body(&$0) }
    }
}
