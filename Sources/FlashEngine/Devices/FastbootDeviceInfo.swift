/// A fastboot device found on USB or named over TCP.
public struct FastbootDeviceInfo: Equatable, Sendable {
    public enum Address: Equatable, Sendable {
        /// Bus number and port path as in sysfs ("1-1.2").
        case usb(bus: UInt8, portPath: String)
        case tcp(host: String, port: UInt16)
    }

    public var address: Address
    public var serial: String?
    public var vendorID: UInt16?
    public var productID: UInt16?
    public var product: String?
    /// Why the device cannot be used as it is, e.g. missing permission; nil when usable.
    public var problem: String?

    public init(address: Address, serial: String?, vendorID: UInt16? = nil, productID: UInt16? = nil, product: String? = nil, problem: String? = nil) {
        self.address = address
        self.serial = serial
        self.vendorID = vendorID
        self.productID = productID
        self.product = product
        self.problem = problem
    }

    /// The selector that names exactly this device ("usb:1-1.2", "tcp:127.0.0.1:5554").
    public var addressSelector: String {
        switch address {
        case .usb(_, let portPath): return "usb:\(portPath)"
        case .tcp(let host, let port): return "tcp:\(host):\(port)"
        }
    }

    public var vidPid: String? {
        guard let vendorID, let productID else { return nil }
        return hex4(vendorID) + ":" + hex4(productID)
    }

    /// The id a job reports as `deviceId`: the serial when known, else the address.
    public var deviceId: String { serial ?? addressSelector }

    /// One line naming the device for lists and error messages.
    public var summary: String {
        var parts = [serial ?? "(no serial)", addressSelector]
        if let vidPid { parts.append(vidPid) }
        if let product { parts.append(product) }
        if let problem { parts.append("[\(problem)]") }
        return parts.joined(separator: "  ")
    }
}

func hex4(_ value: UInt16) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}
