import ArgumentParser
import FlashEngine
import Foundation

struct EmulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "emulate",
        abstract: "Serve an emulated fastboot device over TCP, with partitions as files.",
        discussion: """
            Flash it with 'flashctl flash --device tcp:127.0.0.1:PORT IMAGE' or with AOSP \
            'fastboot -s tcp:127.0.0.1:PORT flash PARTITION IMAGE'. Partition NAME is the file DIR/NAME.img.
            """
    )

    @Option(name: [.customShort("p"), .customLong("tcp")], help: "TCP port to listen on (0 picks a free one).")
    var tcp: UInt16 = DeviceSelector.defaultTCPPort

    @Option(name: .long, help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(name: .long, help: "Folder holding the partitions (created if missing).", completion: .directory)
    var dir: String

    @Option(name: .long, help: "Serial number the device reports (default EMU and the port).")
    var serial: String?

    @Option(name: .long, help: "Product name the device reports.")
    var product = "flashctl-emulator"

    @Flag(name: .long, help: "A/B slots: partitions NAME_a and NAME_b (userdata, metadata, misc, super and a few others once), slot a active.")
    var slots = false

    @Option(name: .long, help: "What getvar version-bootloader answers.")
    var versionBootloader = "emu-bootloader-1.0"

    @Option(name: .long, help: "What getvar version-baseband answers.")
    var versionBaseband = "emu-baseband-1.0"

    @Option(name: .long, help: "Largest download the device accepts, e.g. 256M (M = MiB; K, M, G are binary units).")
    var maxDownloadSize: ByteCount = ByteCount(256 << 20)

    @Option(name: .long, help: "Download speed cap in bytes per second, e.g. 40M (= 40 MiB/s).")
    var speedLimit: ByteCount = ByteCount(0)

    @Option(name: .long, help: "Answer FAIL to commands starting with CMD, e.g. flash:boot=locked. Repeatable.")
    var failOn: [String] = []

    @Option(name: .long, help: "Never answer commands starting with CMD, e.g. flash. Repeatable.")
    var stallOn: [String] = []

    @Option(name: .long, help: "Drop the connection after this many download bytes.")
    var disconnectAfterBytes: ByteCount?

    @Option(name: .long, help: "Stop reading (keep the connection open, take no more data) after this many download bytes.")
    var stopReadingAfterBytes: ByteCount?

    func validate() throws {
        guard maxDownloadSize.value >= 4096, maxDownloadSize.value <= 0xFFFF_FFFF else {
            throw ValidationError("--max-download-size must be between 4K and 4G-1 (download sizes are 32-bit)")
        }
        for spec in failOn + stallOn where spec.isEmpty || spec.hasPrefix("=") {
            throw ValidationError("--fail-on and --stall-on need a command prefix, e.g. flash:boot")
        }
    }

    func run() throws {
        let failures = failOn.map { spec -> EmulatedFaults.Failure in
            let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
            return .init(commandPrefix: parts[0], message: parts.count > 1 ? parts[1] : "injected failure")
        }
        let config = EmulatedDeviceConfig(
            directory: dir, serial: serial ?? "EMU\(tcp)", product: product,
            maxDownloadSize: maxDownloadSize.value, speedLimit: speedLimit.value,
            faults: EmulatedFaults(failures: failures, stallPrefixes: stallOn, disconnectAfterBytes: disconnectAfterBytes?.value, stopReadingAfterBytes: stopReadingAfterBytes?.value),
            slotted: slots, versionBootloader: versionBootloader, versionBaseband: versionBaseband
        )
        // Signals are caught before the announcement, so a stop request never kills us uncleanly.
        let stop = StopRequest()
        let server = try EmulatedDeviceServer(config: config, host: host, port: tcp)
        if serial == nil {
            server.config.serial = "EMU\(server.port)"
        }
        try server.start()
        var registration: String?
        do {
            registration = try EmulatorRegistry.register(host: host, port: server.port, serial: server.config.serial, product: product)
        } catch {
            // It still serves; only 'flashctl devices' will not list it.
            FileHandle.standardError.write(Data("warning: \(error); flashctl devices will not list this emulator\n".utf8))
        }
        // Unbuffered: whoever started us reads this line to learn the port.
        let line = "emulated fastboot device \(server.config.serial) on \(server.address), partitions in \(dir)\n"
        FileHandle.standardOutput.write(Data(line.utf8))

        stop.wait()
        server.stop()
        if let registration { EmulatorRegistry.unregister(registration) }
    }
}

/// A byte count given as 4096, 0x1000, 4K, 512M, 1G, or 512MiB: K, M and G are binary units (KiB,
/// MiB, GiB), as flashctl prints sizes and speeds. 512MB is refused: it could mean either.
struct ByteCount: ExpressibleByArgument, CustomStringConvertible {
    let value: Int64

    /// The shortest exact spelling: 256M, 4K, 1000.
    var description: String {
        for (suffix, unit) in [("G", Int64(1) << 30), ("M", Int64(1) << 20), ("K", Int64(1) << 10)] where value >= unit && value % unit == 0 {
            return "\(value / unit)\(suffix)"
        }
        return "\(value)"
    }

    var defaultValueDescription: String { value == 0 ? "none" : description }

    init(_ value: Int64) {
        self.value = value
    }

    init?(argument: String) {
        var text = argument.uppercased()
        if text.hasPrefix("0X") {
            guard let number = Int64(text.dropFirst(2), radix: 16), number >= 0 else { return nil }
            value = number
            return
        }
        let units: [Character: Double] = ["K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024]
        if text.hasSuffix("IB") {
            text.removeLast(2)
            guard let last = text.last, units[last] != nil else { return nil }
        } else if text.hasSuffix("B") {
            text.removeLast()
            guard text.last?.isNumber == true else { return nil }
        }
        if let last = text.last, let unit = units[last] {
            guard let number = Double(text.dropLast()), number.isFinite, number >= 0, number * unit < 0x1p62 else { return nil }
            value = Int64(number * unit)
        } else if let number = Int64(text), number >= 0 {
            value = number
        } else {
            return nil
        }
    }
}
