import Foundation

/// Where running `flashctl emulate` processes announce themselves, so `flashctl devices` can list
/// them next to USB devices. One small file per listening port; stale files are removed.
public enum EmulatorRegistry {
    /// The registry, in this user's private runtime directory.
    static func directory() throws -> String {
        try RuntimeDirectory.path(under: RuntimeDirectory.base()) + "/emulators"
    }

    /// Records an emulator; returns the file to remove when it stops. Throws when the runtime
    /// directory is not safe to use (see `RuntimeDirectory`).
    @discardableResult
    public static func register(host: String, port: UInt16, serial: String, product: String) throws -> String? {
        let directory = try directory()
        let path = directory + "/\(port)"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try "\(host)\n\(port)\n\(serial)\n\(product)\n".write(toFile: path, atomically: true, encoding: .utf8)
            return path
        } catch {
            return nil
        }
    }

    public static func unregister(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Registered emulators that still accept connections.
    public static func liveDevices() -> [FastbootDeviceInfo] {
        guard let directory = try? directory(), let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
        var devices: [FastbootDeviceInfo] = []
        for name in names.sorted() {
            let path = directory + "/" + name
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            guard lines.count >= 4, let port = UInt16(lines[1]) else { continue }
            guard let socket = try? POSIXSocket.connect(host: lines[0], port: port, timeoutMs: 300) else {
                unregister(path)
                continue
            }
            socket.close()
            devices.append(FastbootDeviceInfo(address: .tcp(host: lines[0], port: port), serial: lines[2], product: lines[3]))
        }
        return devices
    }
}
