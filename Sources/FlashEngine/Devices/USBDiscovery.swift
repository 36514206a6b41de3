import CLibUSB
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A USB device exposing a fastboot interface (class ff, subclass 42, protocol 03), with what is
/// needed to open it. Holds a libusb reference to the device until released.
public final class USBFastbootDevice: @unchecked Sendable {
    public let info: FastbootDeviceInfo
    let device: OpaquePointer
    let interfaceNumber: Int32
    let endpointIn: UInt8
    let endpointOut: UInt8
    let maxPacketSize: Int

    init(info: FastbootDeviceInfo, device: OpaquePointer, interfaceNumber: Int32, endpointIn: UInt8, endpointOut: UInt8, maxPacketSize: Int) {
        self.info = info
        self.device = libusb_ref_device(device)
        self.interfaceNumber = interfaceNumber
        self.endpointIn = endpointIn
        self.endpointOut = endpointOut
        self.maxPacketSize = maxPacketSize
    }

    deinit {
        libusb_unref_device(device)
    }
}

/// Lists fastboot interfaces on every USB device, whatever the vendor.
public enum USBDiscovery {
    static let fastbootClass: UInt8 = 0xff
    static let fastbootSubclass: UInt8 = 0x42
    static let fastbootProtocol: UInt8 = 0x03

    public static func fastbootDevices() throws -> [USBFastbootDevice] {
        let context = try USBContext.shared.get()
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let count = libusb_get_device_list(context.raw, &list)
        guard count >= 0, let list else {
            throw FlashError(.io, "cannot list USB devices: \(USBError.name(Int32(count)))")
        }
        defer { libusb_free_device_list(list, 1) }

        var found: [USBFastbootDevice] = []
        for index in 0..<Int(count) {
            guard let device = list[index], let candidate = inspect(device) else { continue }
            found.append(candidate)
        }
        return found.sorted { $0.info.addressSelector < $1.info.addressSelector }
    }

    private static func inspect(_ device: OpaquePointer) -> USBFastbootDevice? {
        var descriptor = libusb_device_descriptor()
        guard libusb_get_device_descriptor(device, &descriptor) == 0 else { return nil }
        var config: UnsafeMutablePointer<libusb_config_descriptor>?
        var rc = libusb_get_active_config_descriptor(device, &config)
        if rc != 0 { rc = libusb_get_config_descriptor(device, 0, &config) }
        guard rc == 0, let config else { return nil }
        defer { libusb_free_config_descriptor(config) }
        guard let endpoints = fastbootEndpoints(config.pointee) else { return nil }

        let bus = libusb_get_bus_number(device)
        let address = libusb_get_device_address(device)
        let portPath = portPath(of: device, bus: bus)
        let sysfs = "/sys/bus/usb/devices/\(portPath)"
        let info = FastbootDeviceInfo(
            address: .usb(bus: bus, portPath: portPath),
            serial: readSysfsAttribute(sysfs + "/serial"),
            vendorID: descriptor.idVendor,
            productID: descriptor.idProduct,
            product: readSysfsAttribute(sysfs + "/product"),
            problem: accessProblem(bus: bus, address: address)
        )
        return USBFastbootDevice(
            info: info, device: device, interfaceNumber: endpoints.interface,
            endpointIn: endpoints.input, endpointOut: endpoints.output, maxPacketSize: endpoints.maxPacket
        )
    }

    private static func fastbootEndpoints(_ config: libusb_config_descriptor)
        -> (interface: Int32, input: UInt8, output: UInt8, maxPacket: Int)?
    {
        for i in 0..<Int(config.bNumInterfaces) {
            let interface = config.interface[i]
            for a in 0..<Int(interface.num_altsetting) {
                let alt = interface.altsetting[a]
                guard alt.bInterfaceClass == fastbootClass, alt.bInterfaceSubClass == fastbootSubclass,
                      alt.bInterfaceProtocol == fastbootProtocol else { continue }
                var input: UInt8?
                var output: UInt8?
                var maxPacket = 512
                for e in 0..<Int(alt.bNumEndpoints) {
                    let endpoint = alt.endpoint[e]
                    guard endpoint.bmAttributes & 0x03 == UInt8(LIBUSB_TRANSFER_TYPE_BULK.rawValue) else { continue }
                    if endpoint.bEndpointAddress & 0x80 != 0 {
                        input = input ?? endpoint.bEndpointAddress
                    } else {
                        output = output ?? endpoint.bEndpointAddress
                        maxPacket = Int(endpoint.wMaxPacketSize)
                    }
                }
                if let input, let output {
                    return (Int32(alt.bInterfaceNumber), input, output, maxPacket)
                }
            }
        }
        return nil
    }

    private static func portPath(of device: OpaquePointer, bus: UInt8) -> String {
        var ports = [UInt8](repeating: 0, count: 8)
        let depth = libusb_get_port_numbers(device, &ports, Int32(ports.count))
        guard depth > 0 else { return "\(bus)-0" }
        return "\(bus)-" + ports[0..<Int(depth)].map(String.init).joined(separator: ".")
    }

    private static func accessProblem(bus: UInt8, address: UInt8) -> String? {
        let node = "/dev/bus/usb/" + pad3(bus) + "/" + pad3(address)
        return access(node, R_OK | W_OK) == 0 ? nil : "no permission"
    }

    private static func pad3(_ value: UInt8) -> String {
        let digits = String(value)
        return String(repeating: "0", count: 3 - digits.count) + digits
    }
}

/// Reads a one-line sysfs attribute, without its trailing newline; nil when absent.
func readSysfsAttribute(_ path: String) -> String? {
    guard let file = fopen(path, "r") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 512)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
    let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
    return trimmed.isEmpty ? nil : trimmed
}
