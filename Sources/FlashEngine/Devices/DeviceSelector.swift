import Foundation

/// How a user names a device: `SERIAL`, `serial:S`, `usb:PORTPATH`, `VID:PID`, `tcp:HOST[:PORT]`.
public enum DeviceSelector: Equatable, Sendable, CustomStringConvertible {
    case serial(String)
    case usbPort(String)
    case vidPid(UInt16, UInt16)
    case tcp(host: String, port: UInt16)

    public static let defaultTCPPort: UInt16 = 5554

    public static func parse(_ text: String) throws -> DeviceSelector {
        let text = text.trimmingWhitespace
        guard !text.isEmpty else { throw FlashError(.deviceSelection, "empty device selector") }
        if let rest = text.dropPrefix("tcp:") {
            return try parseTCP(rest, original: text)
        }
        if let rest = text.dropPrefix("usb:") {
            guard rest.range(of: #"^[0-9]+-[0-9]+(\.[0-9]+)*$"#, options: .regularExpression) != nil else {
                throw FlashError(.deviceSelection, "'\(text)' is not a USB port path; expected usb:BUS-PORT[.PORT...], e.g. usb:1-1.2 (see flashctl devices)")
            }
            return .usbPort(rest)
        }
        if let rest = text.dropPrefix("serial:") {
            guard !rest.isEmpty else { throw FlashError(.deviceSelection, "'\(text)' names no serial") }
            return .serial(rest)
        }
        if text.range(of: #"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}$"#, options: .regularExpression) != nil {
            let parts = text.split(separator: ":")
            return .vidPid(UInt16(parts[0], radix: 16)!, UInt16(parts[1], radix: 16)!)
        }
        if text.hasPrefix("/") || text.contains(":") {
            throw FlashError(.deviceSelection, "unknown device selector '\(text)'; use SERIAL, serial:S, usb:PORTPATH, VID:PID or tcp:HOST[:PORT]")
        }
        return .serial(text)
    }

    private static func parseTCP(_ rest: String, original: String) throws -> DeviceSelector {
        var host = rest
        var port = defaultTCPPort
        if let colon = rest.lastIndex(of: ":"), !rest.hasPrefix("[") || rest[..<colon].hasSuffix("]") {
            guard let parsed = UInt16(rest[rest.index(after: colon)...]), parsed > 0 else {
                throw FlashError(.deviceSelection, "'\(original)' has a bad port; expected tcp:HOST[:PORT]")
            }
            host = String(rest[..<colon])
            port = parsed
        }
        host = host.trimmingCharacters(in: ["[", "]"])
        guard !host.isEmpty else { throw FlashError(.deviceSelection, "'\(original)' names no host; expected tcp:HOST[:PORT]") }
        return .tcp(host: host, port: port)
    }

    public func matches(_ device: FastbootDeviceInfo) -> Bool {
        switch (self, device.address) {
        case (.serial(let serial), _):
            return device.serial == serial
        case (.usbPort(let path), .usb(_, let portPath)):
            return path == portPath
        case (.vidPid(let vid, let pid), _):
            return device.vendorID == vid && device.productID == pid
        case (.tcp(let host, let port), .tcp(let deviceHost, let devicePort)):
            return host == deviceHost && port == devicePort
        default:
            return false
        }
    }

    public var description: String {
        switch self {
        case .serial(let serial): return serial
        case .usbPort(let path): return "usb:\(path)"
        case .vidPid(let vid, let pid): return hex4(vid) + ":" + hex4(pid)
        case .tcp(let host, let port): return "tcp:\(host):\(port)"
        }
    }
}

extension String {
    func dropPrefix(_ prefix: String) -> String? {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : nil
    }

    var trimmingWhitespace: String {
        trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
