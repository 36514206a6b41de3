import ArgumentParser
import FlashEngine
import Foundation

struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "List fastboot devices (USB and running emulated ones) and disks.",
        discussion: "Disks are listed with what decides whether flashctl writes them: removable (USB, SD/MMC, loop), mounted, or holding the running system."
    )

    @Flag(name: .long, help: "Print one JSON object per device.")
    var json = false

    @Flag(name: .long, help: "Then keep watching: print each USB device as udev reports it plugged in or unplugged, with its FLASHCTL_PROFILE (Ctrl-C stops).")
    var watch = false

    func run() throws {
        try list()
        if watch { try HotplugWatch(json: json).run() }
    }

    private func list() throws {
        let devices = try USBDiscovery.fastbootDevices().map(\.info) + EmulatorRegistry.liveDevices()
        let disks = DiskDiscovery().disks()
        if json {
            devices.forEach { print(DeviceListing.json($0)) }
            disks.forEach { print(DiskListing.json($0)) }
            return
        }
        print(devices.isEmpty ? "no fastboot devices found" : DeviceListing.table(devices))
        print("")
        print(disks.isEmpty ? "no disks found" : DiskListing.table(disks))
    }
}
