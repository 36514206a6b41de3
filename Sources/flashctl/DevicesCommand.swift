import ArgumentParser
import FlashEngine
import Foundation

struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "List fastboot devices on USB and running emulated devices."
    )

    @Flag(name: .long, help: "Print one JSON object per device.")
    var json = false

    func run() throws {
        let devices = try USBDiscovery.fastbootDevices().map(\.info) + EmulatorRegistry.liveDevices()
        if json {
            for device in devices {
                print(DeviceListing.json(device))
            }
            return
        }
        guard !devices.isEmpty else {
            print("no fastboot devices found")
            return
        }
        print(DeviceListing.table(devices))
    }
}
