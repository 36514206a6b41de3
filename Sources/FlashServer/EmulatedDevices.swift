import FlashEngine
import Foundation
import Synchronization

/// The fastboot devices `flashctl serve --emulate N` runs inside the server: each listens on a
/// loopback port and keeps its partitions as files in a directory of its own.
final class EmulatedDevices: Sendable {
    let servers: [EmulatedDeviceServer]
    let directory: String

    private static let instances = Atomic<Int>(0)

    /// Partitions go under `$TMPDIR` (they can be large; XDG_RUNTIME_DIR is a small tmpfs), in
    /// this user's private runtime directory there. Folders left by a server that was killed are
    /// removed first.
    init(count: Int, speedLimit: Int64?, slotted: Bool = false) throws {
        let instance = Self.instances.add(1, ordering: .relaxed).newValue
        let runtime = try RuntimeDirectory.path(under: RuntimeDirectory.base(environment: ProcessInfo.processInfo.environment.filter { $0.key != "XDG_RUNTIME_DIR" }))
        Self.removeStale(in: runtime)
        directory = runtime + "/serve-\(getpid())-\(instance)"
        var servers: [EmulatedDeviceServer] = []
        for index in 1...max(1, count) {
            let partitions = directory + "/EMU\(index)"
            try FileManager.default.createDirectory(atPath: partitions, withIntermediateDirectories: true)
            let config = EmulatedDeviceConfig(directory: partitions, serial: "EMU\(index)", product: "emulated fastboot device", speedLimit: speedLimit ?? 0, slotted: slotted)
            let server = try EmulatedDeviceServer(config: config, host: "127.0.0.1", port: 0)
            try server.start()
            servers.append(server)
        }
        self.servers = servers
    }

    /// `serve-PID-N` folders of servers no longer running.
    private static func removeStale(in runtime: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: runtime)) ?? [] where name.hasPrefix("serve-") {
            let parts = name.split(separator: "-")
            guard parts.count == 3, let pid = Int32(parts[1]), pid != getpid() else { continue }
            if kill(pid, 0) != 0, errno == ESRCH {
                try? FileManager.default.removeItem(atPath: runtime + "/" + name)
            }
        }
    }

    var devices: [FastbootDeviceInfo] {
        servers.map { FastbootDeviceInfo(address: .tcp(host: $0.host, port: $0.port), serial: $0.config.serial, product: $0.config.product) }
    }

    func stop() {
        servers.forEach { $0.stop() }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
