/// Turns what the user typed into exactly one device, or an error that lists the candidates.
public struct FastbootDeviceFinder: Sendable {
    /// Lists USB fastboot devices; replaceable so selection rules can be tested without USB.
    public var listUSB: @Sendable () throws -> [USBFastbootDevice]
    /// Fastboot-over-TCP devices known by name (a server's emulated devices), matched by serial
    /// like USB devices.
    public var listNetwork: @Sendable () -> [FastbootDeviceInfo]

    public init(
        listUSB: @escaping @Sendable () throws -> [USBFastbootDevice] = { try USBDiscovery.fastbootDevices() },
        listNetwork: @escaping @Sendable () -> [FastbootDeviceInfo] = { [] }
    ) {
        self.listUSB = listUSB
        self.listNetwork = listNetwork
    }

    public enum Found: Sendable {
        case usb(USBFastbootDevice)
        case tcp(FastbootDeviceInfo)

        public var info: FastbootDeviceInfo {
            switch self {
            case .usb(let device): return device.info
            case .tcp(let info): return info
            }
        }
    }

    /// `selector` nil means "the only device connected". USB devices come first: a network device
    /// is chosen only when no USB device matches (an emulator bridged to USB has the same serial).
    public func find(_ selector: DeviceSelector?) throws -> Found {
        let network = listNetwork()
        if case .tcp(let host, let port) = selector {
            let address = FastbootDeviceInfo.Address.tcp(host: host, port: port)
            return .tcp(network.first { $0.address == address } ?? FastbootDeviceInfo(address: address, serial: nil))
        }
        let usb = try listUSB()
        let devices = usb.map(\.info) + network
        let usbMatching = usb.map(\.info).filter { selector?.matches($0) ?? true }
        let matching = usbMatching.isEmpty ? network.filter { selector?.matches($0) ?? true } : usbMatching
        guard let selector else {
            switch matching.count {
            case 0:
                throw FlashError(.deviceSelection, "no fastboot device found on USB; is the device in fastboot mode and plugged in? (for an emulated device: flashctl emulate --tcp 5554 --dir DIR, then --device tcp:127.0.0.1:5554)")
            case 1:
                return found(matching[0], usb: usb)
            default:
                throw FlashError(.deviceSelection, "\(matching.count) fastboot devices are connected; choose one with --device:\n" + Self.list(matching))
            }
        }
        switch matching.count {
        case 1:
            return found(matching[0], usb: usb)
        case 0:
            let connected = devices.isEmpty ? "no fastboot device is connected" : "connected:\n" + Self.list(devices)
            throw FlashError(.deviceSelection, "no fastboot device matches '\(selector)'; \(connected)")
        default:
            throw FlashError(.deviceSelection, "'\(selector)' matches \(matching.count) devices; choose one by serial or port path:\n" + Self.list(matching))
        }
    }

    /// Opens the transport to a found device; a cancel of `control` ends a TCP connect at once.
    public func connect(_ found: Found, connectTimeoutMs: Int = 5_000, control: JobControl? = nil) throws -> FastbootTransport {
        switch found {
        case .usb(let device):
            if device.info.problem == "no permission" {
                throw FlashError(.noPermission, NoPermissionHint.message(for: device.info.addressSelector))
            }
            return try LibUSBTransport(device: device)
        case .tcp(let info):
            guard case .tcp(let host, let port) = info.address else {
                throw FlashError(.deviceSelection, "\(info.summary) is not a TCP device")
            }
            return try TCPTransport(host: host, port: port, timeoutMs: connectTimeoutMs, control: control)
        }
    }

    private func found(_ info: FastbootDeviceInfo, usb: [USBFastbootDevice]) -> Found {
        if let device = usb.first(where: { $0.info == info }) { return .usb(device) }
        return .tcp(info)
    }

    static func list(_ devices: [FastbootDeviceInfo]) -> String {
        devices.map { "  " + $0.summary }.joined(separator: "\n")
    }
}
