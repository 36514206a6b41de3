import ArgumentParser
import FlashEngine
import Foundation

/// The device and timeouts every fastboot command takes.
struct FastbootDeviceOptions: ParsableArguments {
    @Option(name: [.customShort("d"), .long], help: "The device (see 'flashctl devices'); default: the only one connected.")
    var device: String?

    @Option(name: .long, help: "Seconds to wait for the device to answer a command.")
    var commandTimeout: Int = 10

    @Option(name: .long, help: "Seconds to wait for the device to write or erase a partition.")
    var writeTimeout: Int = 120

    /// Talks to the device; its INFO lines go to stderr as "(device) ...". Ctrl-C stops a wait
    /// and ends flashctl with the signal's status, saying the command may not have been done.
    func talk<T>(_ body: (FastbootClient) throws -> T) throws -> T {
        let control = JobControl()
        let interrupt = InterruptHandler { control.cancel() }
        defer { interrupt.cancel() }
        do {
            return try FastbootConversation.run(
                device: try device.map(DeviceSelector.parse),
                timeouts: FastbootTimeouts(commandMs: commandTimeout * 1000, writeMs: writeTimeout * 1000),
                control: control,
                finder: DeviceListing.finder,
                onDeviceMessage: { ProgressRenderer.writeAll("(device) \($0)\n", to: STDERR_FILENO) },
                body)
        } catch let error as FlashError where error.kind == .cancelled {
            guard let signal = interrupt.signalReceived else { throw error }
            throw CancelReport.exit(lines: ["cancelled while waiting for \(device ?? "the device"): it may or may not have done what it was asked"], signal: signal)
        }
    }
}

struct GetvarCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "getvar",
        abstract: "Print a variable of a fastboot device, or all of them ('all').",
        discussion: "Prints NAME: VALUE lines on stdout (with --json one object), as 'fastboot getvar' prints them on stderr.")

    @OptionGroup var options: FastbootDeviceOptions

    @Flag(name: .long, help: "Print a JSON object of name and value.")
    var json = false

    @Argument(help: "The variable (e.g. product, current-slot, max-download-size), or all.")
    var name: String

    func run() throws {
        let variables = try options.talk { client in
            name == "all" ? try client.allVariables() : [(name: name, value: try client.getvar(name).trimmingCharacters(in: .whitespaces))]
        }
        if json {
            var object: [String: String] = [:]
            for variable in variables { object[variable.name] = variable.value }
            print(JSONOutput.string(object, [.sortedKeys]))
        } else {
            for variable in variables { print("\(variable.name): \(variable.value)") }
        }
    }
}

struct EraseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "erase", abstract: "Erase a partition of a fastboot device.")

    @OptionGroup var options: FastbootDeviceOptions

    @Option(name: .long, help: "A/B slot: a, b, other or all (default: the current slot, for a partition with slots).")
    var slot: String?

    @Argument(help: "The partition (e.g. userdata, boot).")
    var partition: String

    func run() throws {
        let choice = try slot.map(SlotChoice.init) ?? .current
        try options.talk { client in
            try client.erase(partition: partition, slot: choice) { print("erased \($0)") }
        }
    }
}

struct RebootCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reboot",
        abstract: "Reboot a fastboot device: into the system (default), the bootloader, fastbootd or recovery.")

    @OptionGroup var options: FastbootDeviceOptions

    @Argument(help: "system, bootloader, fastboot or recovery.")
    var target: String = "system"

    func validate() throws {
        guard FastbootClient.RebootTarget(rawValue: target) != nil else {
            throw ValidationError("reboot into system, bootloader, fastboot or recovery, not '\(target)'")
        }
    }

    func run() throws {
        let into = FastbootClient.RebootTarget(rawValue: target) ?? .system
        try options.talk { try $0.reboot(into: into) }
        print("rebooting into \(into.rawValue)")
    }
}

struct SetActiveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set-active", abstract: "Make an A/B slot the one a fastboot device boots.")

    @OptionGroup var options: FastbootDeviceOptions

    @Argument(help: "a or b.")
    var slot: String

    func run() throws {
        guard case .slot(let name) = try SlotChoice(slot) else {
            throw ValidationError("set-active takes a or b, not '\(slot)'")
        }
        try options.talk { try $0.setActive(slot: name) }
        print("active slot: \(name)")
    }
}

struct OemCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "oem", abstract: "Send a vendor command (oem ...) to a fastboot device and print its answer.")

    @OptionGroup var options: FastbootDeviceOptions

    @Argument(help: "The command and its arguments, e.g. device-info.")
    var words: [String]

    func run() throws {
        for line in try options.talk({ try $0.vendorCommand("oem " + words.joined(separator: " ")) }) {
            print(line)
        }
    }
}

struct FlashingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flashing",
        abstract: "Lock or unlock a fastboot device's bootloader (asks first), or ask whether it may be unlocked.",
        discussion: "Unlocking lets anyone flash the device, and on most devices erases all user data.")

    @OptionGroup var options: FastbootDeviceOptions

    @Flag(name: .long, help: "Do not ask.")
    var yes = false

    @Argument(help: "lock, unlock or get_unlock_ability.")
    var action: String

    func validate() throws {
        guard ["lock", "unlock", "get_unlock_ability"].contains(action) else {
            throw ValidationError("flashing takes lock, unlock or get_unlock_ability, not '\(action)'")
        }
    }

    func run() throws {
        if action != "get_unlock_ability" {
            let device = options.device ?? "the connected device"
            let effect = action == "unlock"
                ? "Unlocking lets anyone flash \(device) and on most devices erases all its user data."
                : "Locking \(device) with images on it that its vendor did not sign can leave it unable to boot."
            let refused = "not confirmed: the device was not \(action)ed"
            try Confirmation.ask(
                "\(effect) \(action.capitalized) it? [y/N] ", accepted: ["y", "yes"], assumeYes: yes,
                noTerminal: "\(refused): standard input is not a terminal, so add --yes to go on without asking", refused: refused)
        }
        for line in try options.talk({ try $0.vendorCommand("flashing " + action) }) {
            print(line)
        }
        if action != "get_unlock_ability" { print("\(action)ed") }
    }
}

struct BootCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "boot", abstract: "Send a boot image and boot it from RAM, writing nothing to the device's storage.")

    @OptionGroup var options: FastbootDeviceOptions

    @Argument(help: "The boot image.", completion: .file())
    var image: String

    func run() throws {
        try options.talk { try $0.boot(imageAt: image) }
        print("booting \(image)")
    }
}
