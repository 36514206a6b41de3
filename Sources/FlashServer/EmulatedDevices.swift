import FlashEngine
import Foundation
import Synchronization

/// The fastboot devices `flashctl serve --emulate N` runs inside the server: each listens on a
/// loopback port and keeps its partitions as files in a directory of its own.
final class EmulatedDevices: Sendable {
    let servers: [EmulatedDeviceServer]
    let directory: String

    private static let instances = Atomic<Int>(0)

    init(count: Int, speedLimit: Int64?) throws {
        let instance = Self.instances.add(1, ordering: .relaxed).newValue
        directory = NSTemporaryDirectory() + "flashctl-serve-\(getpid())-\(instance)"
        var servers: [EmulatedDeviceServer] = []
        for index in 1...max(1, count) {
            let partitions = directory + "/EMU\(index)"
            try FileManager.default.createDirectory(atPath: partitions, withIntermediateDirectories: true)
            let config = EmulatedDeviceConfig(directory: partitions, serial: "EMU\(index)", product: "emulated fastboot device", speedLimit: speedLimit ?? 0)
            let server = try EmulatedDeviceServer(config: config, host: "127.0.0.1", port: 0)
            server.start()
            servers.append(server)
        }
        self.servers = servers
    }

    var devices: [FastbootDeviceInfo] {
        servers.map { FastbootDeviceInfo(address: .tcp(host: $0.host, port: $0.port), serial: $0.config.serial, product: $0.config.product) }
    }

    func stop() {
        servers.forEach { $0.stop() }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
