/// Turns what the user typed into exactly one device, or an error that lists the candidates.
public struct FastbootDeviceFinder: Sendable {
    /// Lists USB fastboot devices; replaceable so selection rules can be tested without USB.
    public var listUSB: @Sendable () throws -> [USBFastbootDevice]

    public init(listUSB: @escaping @Sendable () throws -> [USBFastbootDevice] = { try USBDiscovery.fastbootDevices() }) {
        self.listUSB = listUSB
    }

    public enum Found: Sendable {
        case usb(USBFastbootDevice)
        case tcp(host: String, port: UInt16)

        public var info: FastbootDeviceInfo {
            switch self {
            case .usb(let device): return device.info
            case .tcp(let host, let port): return FastbootDeviceInfo(address: .tcp(host: host, port: port), serial: nil)
            }
        }
    }

    /// `selector` nil means "the only device connected".
    public func find(_ selector: DeviceSelector?) throws -> Found {
        if case .tcp(let host, let port) = selector {
            return .tcp(host: host, port: port)
        }
        let devices = try listUSB()
        guard let selector else {
            switch devices.count {
            case 0:
                throw FlashError(.deviceSelection, "no fastboot device found on USB; is the device in fastboot mode and plugged in? (for an emulated device: flashctl emulate --tcp 5554 --dir DIR, then --device tcp:127.0.0.1:5554)")
            case 1:
                return .usb(devices[0])
            default:
                throw FlashError(.deviceSelection, "\(devices.count) fastboot devices are connected; choose one with --device:\n" + Self.list(devices))
            }
        }
        let matching = devices.filter { selector.matches($0.info) }
        switch matching.count {
        case 1:
            return .usb(matching[0])
        case 0:
            let connected = devices.isEmpty ? "no fastboot device is connected" : "connected:\n" + Self.list(devices)
            throw FlashError(.deviceSelection, "no fastboot device matches '\(selector)'; \(connected)")
        default:
            throw FlashError(.deviceSelection, "'\(selector)' matches \(matching.count) devices; choose one by serial or port path:\n" + Self.list(matching))
        }
    }

    /// Opens the transport to a found device.
    public func connect(_ found: Found, connectTimeoutMs: Int = 5_000) throws -> FastbootTransport {
        switch found {
        case .usb(let device):
            if device.info.problem == "no permission" {
                throw FlashError(.noPermission, NoPermissionHint.message(for: device.info.addressSelector))
            }
            return try LibUSBTransport(device: device)
        case .tcp(let host, let port):
            return try TCPTransport(host: host, port: port, timeoutMs: connectTimeoutMs)
        }
    }

    static func list(_ devices: [USBFastbootDevice]) -> String {
        devices.map { "  " + $0.info.summary }.joined(separator: "\n")
    }
}
