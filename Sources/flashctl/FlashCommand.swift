import ArgumentParser
import FlashEngine
import Foundation

struct FlashCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flash",
        abstract: "Flash an image to a fastboot device's partition, or to USB drives and SD cards.",
        discussion: """
            Devices: SERIAL, serial:S, usb:PORTPATH (e.g. usb:1-1.2), VID:PID (e.g. 18d1:4ee0) or \
            tcp:HOST[:PORT] (port 5554 by default); running 'flashctl emulate' devices are found by \
            serial too. Without --device the only connected device is used.
            Images may be raw, Android sparse, gzip, xz, zstd, bzip2 or a zip holding one image (found \
            by content); they are decompressed on the fly. Images larger than the device's \
            max-download-size are sent as several sparse pieces; a bmaptool block map (--bmap, or \
            IMAGE.bmap beside it) sends only the mapped blocks.
            With --server, or $FLASHCTL_SERVER when set, the job runs in a running 'flashctl serve' \
            (the image is then a file in the server's image directory) and its progress is shown here; \
            Ctrl-C cancels it. Disks are always written here.
            Disks: --device /dev/sdX (repeat it to write several at once from one read of the image). \
            Mounted, system, non-removable and too-small disks are refused unless --force; \
            flashctl names the target and asks before writing unless --yes; everything written is \
            read back and compared, and a block map's per-range checksums checked, unless --no-verify.
            """
    )

    @Option(name: [.customShort("d"), .long], help: "The device to flash (see 'flashctl devices'); for disks, repeatable.")
    var device: [String] = []

    @Option(name: .customLong("partition"), help: "Partition to write (default: the image's file name without extension).")
    var partitionOption: String?

    @Option(name: .long, help: "A/B slot to write: a, b, other or all (default: the current one, for a partition with slots).")
    var slot: String?

    @Flag(name: .long, help: "Print protocol events as newline-delimited JSON (the default when stdout is not a terminal).")
    var json = false

    @Flag(name: .long, help: "Reboot the device when everything is written.")
    var reboot = false

    @Option(name: .long, help: "Seconds to wait for the device to answer a command.")
    var commandTimeout: Int = 10

    @Option(name: .long, help: "Seconds to wait for the device to write a partition.")
    var writeTimeout: Int = 120

    @Option(name: .long, help: "Bandwidth cap for this job in bytes per second (e.g. 20M = 20 MiB/s); only with --server.")
    var limit: ByteCount?

    @Option(name: .long, help: "Run the job in the flashctl server at this URL (e.g. http://127.0.0.1:3001; default: $FLASHCTL_SERVER when set, else flash here).")
    var server: String?

    @Option(name: .long, help: ArgumentHelp("With --server in a farm: the station whose device it is (needed when several have that id).", valueName: "name"))
    var station: String?

    @Option(name: .long, help: "Access token for --server (default: $FLASHCTL_TOKEN).")
    var token: String?

    @Option(name: .long, help: ArgumentHelp("CA certificate (PEM) to trust for an https server with a certificate of its own (default: $FLASHCTL_CA).", valueName: "file"), completion: .file())
    var ca: String?

    @Option(name: .long, help: "The bmaptool block map to use (default: IMAGE.bmap beside the image, if any).", completion: .file(extensions: ["bmap"]))
    var bmap: String?

    @Flag(name: .long, help: "Ignore a block map found beside the image.")
    var noBmap = false

    @Option(name: .long, help: "The file to flash from inside a zip holding several.")
    var entry: String?

    @Flag(name: [.customShort("y"), .long], help: "Disks: write without asking.")
    var yes = false

    @Flag(name: .long, help: "Disks: write even to non-removable or too-small disks and partitions (a mounted disk must be unmounted first).")
    var force = false

    @Flag(name: .long, help: "Disks: skip reading back what was written, and a block map's per-range checksums (as bmaptool --no-verify).")
    var noVerify = false

    @Argument(help: ArgumentHelp("[PARTITION] IMAGE: the image file (raw, Android sparse, or compressed: gz, xz, zst, bz2, zip), after the partition if it is named first, as with fastboot.", valueName: "partition-and-image"), completion: .file())
    var words: [String]

    /// The image: the last word.
    var image: String { words.last ?? "" }

    /// `flash PARTITION IMAGE` (fastboot's habit) or `--partition`.
    var partition: String? { words.count == 2 ? words[0] : partitionOption }

    func validate() throws {
        guard (1...2).contains(words.count) else {
            throw ValidationError("give the image, or the partition and the image (flash boot boot.img)")
        }
        if words.count == 2, partitionOption != nil {
            throw ValidationError("the partition is named twice: as the first word and with --partition")
        }
        let disks = device.filter(isDiskPath)
        if !disks.isEmpty, words.count == 2 || slot != nil {
            throw ValidationError("a disk is written whole: give it the image only, without a partition or --slot")
        }
        if let slot { _ = try SlotChoice(slot) }
        if !disks.isEmpty, disks.count != device.count {
            throw ValidationError("--device names both disks and fastboot devices; flash them separately")
        }
        if disks.isEmpty, device.count > 1 {
            throw ValidationError("one fastboot device at a time: --device was given \(device.count) times")
        }
        if disks.isEmpty, yes || force || noVerify {
            throw ValidationError("--yes, --force and --no-verify apply to disks (--device /dev/sdX)")
        }
        if serverURL == nil, station != nil {
            throw ValidationError("--station names a station of a farm: give --server too")
        }
        if serverURL != nil, !device.contains(where: isDiskPath), bmap != nil || noBmap || entry != nil {
            throw ValidationError("--bmap, --no-bmap and --entry apply to images flashed here; the server finds IMAGE.bmap beside its image itself")
        }
    }

    func run() async throws {
        if let first = device.first, isDiskPath(first) {
            guard server == nil else { throw ValidationError("--server runs fastboot jobs; write disks with flashctl flash here") }
            try DiskFlash(command: self).run()
            return
        }
        if serverURL != nil {
            try await RemoteFlash(command: self).run()
            return
        }
        if limit != nil {
            throw ValidationError("--limit applies to jobs run by a server; give --server too")
        }
        let selector = try device.first.map(DeviceSelector.parse)
        let request = FastbootFlashRequest(
            imagePath: image, partition: partition, device: selector, reboot: reboot,
            timeouts: FastbootTimeouts(commandMs: commandTimeout * 1000, writeMs: writeTimeout * 1000),
            bmapPath: bmap, noBmap: noBmap, entry: entry, slot: try slot.map(SlotChoice.init)
        )
        try LocalFastbootJob.run(request, json: json)
    }

    /// `--server`, else `$FLASHCTL_SERVER` (as the job commands read it) for fastboot jobs.
    var serverURL: String? {
        server ?? ProcessInfo.processInfo.environment["FLASHCTL_SERVER"].flatMap { $0.isEmpty ? nil : $0 }
    }
}
