import ArgumentParser
import FlashEngine
import Foundation

struct UpdateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update",
        abstract: "Flash a factory image zip (android-info.txt and partition images), as 'fastboot update' does.",
        discussion: """
            The device is checked against android-info.txt (board, bootloader and baseband versions, \
            partitions) before anything is written; then the boot-critical images, then the OS images \
            are flashed in AOSP fastboot's order, as one job with one progress, and the device reboots. \
            Partitions with A/B slots are written in the current slot, or the one --slot names (which is \
            made active first; with all, both are written and a is made active). With dynamic \
            partitions (super_empty.img in the zip) the OS images are flashed from fastbootd, which the \
            device is rebooted into and followed back.
            """
    )

    @OptionGroup var options: FastbootDeviceOptions

    @Option(name: .long, help: "A/B slot to write: a, b, other or all (default: the current one).")
    var slot: String?

    @Flag(name: .long, help: "Erase userdata, cache and metadata after flashing (as fastboot -w).")
    var wipe = false

    @Flag(name: .long, help: "Do not reboot the device at the end.")
    var skipReboot = false

    @Flag(name: .long, help: "Print protocol events as newline-delimited JSON (the default when stdout is not a terminal).")
    var json = false

    @Argument(help: "The factory image zip (image-PRODUCT-BUILD.zip).", completion: .file(extensions: ["zip"]))
    var zip: String

    func run() async throws {
        let factory = try FactoryImage.open(path: zip)
        let request = factory.request(
            device: try options.device.map(DeviceSelector.parse), slot: try slot.map(SlotChoice.init), wipe: wipe, reboot: !skipReboot,
            timeouts: FastbootTimeouts(commandMs: options.commandTimeout * 1000, writeMs: options.writeTimeout * 1000))
        try LocalFastbootJob.run(request, json: json)
    }
}
