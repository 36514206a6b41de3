import ArgumentParser
import FlashEngine
import Foundation

struct FlashCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flash",
        abstract: "Flash an image to a partition of a fastboot device.",
        discussion: """
            Devices: SERIAL, serial:S, usb:PORTPATH (e.g. usb:1-1.2), VID:PID (e.g. 18d1:4ee0) or \
            tcp:HOST[:PORT] (port 5554 by default). Without --device the only connected device is used.
            Images larger than the device's max-download-size are sent as several sparse pieces.
            With --server the job runs in a running 'flashctl serve' (the image is then a file in the \
            server's image directory) and its progress is shown here; Ctrl-C cancels it.
            """
    )

    @Option(name: .long, help: "The device to flash (see 'flashctl devices').")
    var device: String?

    @Option(name: .long, help: "Partition to write (default: the image's file name without extension).")
    var partition: String?

    @Flag(name: .long, help: "Print protocol events as newline-delimited JSON (the default when stdout is not a terminal).")
    var json = false

    @Flag(name: .long, help: "Reboot the device when everything is written.")
    var reboot = false

    @Option(name: .long, help: "Seconds to wait for the device to answer a command.")
    var commandTimeout: Int = 10

    @Option(name: .long, help: "Seconds to wait for the device to write a partition.")
    var writeTimeout: Int = 120

    @Option(name: .long, help: "Bandwidth cap for this job in bytes per second (e.g. 20M); only with --server.")
    var limit: ByteCount?

    @Option(name: .long, help: "Run the job in the flashctl server at this URL (e.g. http://127.0.0.1:3001).")
    var server: String?

    @Option(name: .long, help: "Access token for --server (default: $FLASHCTL_TOKEN).")
    var token: String?

    @Argument(help: "The image file (raw or Android sparse).")
    var image: String

    func run() async throws {
        if server != nil {
            try await RemoteFlash(command: self).run()
            return
        }
        if limit != nil {
            throw ValidationError("--limit applies to jobs run by a server; give --server too")
        }
        let selector = try device.map(DeviceSelector.parse)
        let request = FastbootFlashRequest(
            imagePath: image, partition: partition, device: selector, reboot: reboot,
            timeouts: FastbootTimeouts(commandMs: commandTimeout * 1000, writeMs: writeTimeout * 1000)
        )
        let job = try FastbootFlashJob.prepare(request)
        let renderer = ProgressRenderer(json: ProgressRenderer.wantsJSON(flag: json))
        let interrupt = InterruptHandler { job.control.cancel() }
        defer { interrupt.cancel() }
        let succeeded = job.run { event in renderer.render(event) }
        if !succeeded {
            throw ExitCode.failure
        }
    }
}
