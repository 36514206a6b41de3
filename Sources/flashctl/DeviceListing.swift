import FlashEngine
import Foundation

/// How `flashctl devices` shows devices.
enum DeviceListing {
    /// Finds a device as `flashctl devices` lists them: USB, and running emulators by serial too.
    static let finder = FastbootDeviceFinder(listNetwork: { EmulatorRegistry.liveDevices() })

    static func table(_ devices: [FastbootDeviceInfo]) -> String {
        let header = ["SERIAL", "ADDRESS", "VID:PID", "PRODUCT", "STATE"]
        let rows = devices.map { device in
            [device.serial ?? "-", device.addressSelector, device.vidPid ?? "-", device.product ?? "-", device.problem ?? "fastboot"]
        }
        var text = TextTable.render(header: header, rows: rows)
        if devices.contains(where: { $0.problem == "no permission" }) {
            text += "\n\n" + NoPermissionHint.message(for: "some devices")
        }
        return text
    }

    static func json(_ device: FastbootDeviceInfo) -> String {
        var object: [String: Any] = ["address": device.addressSelector, "id": device.deviceId, "kind": "fastboot"]
        object["serial"] = device.serial
        object["vidPid"] = device.vidPid
        object["product"] = device.product
        object["state"] = device.problem ?? "fastboot"
        if case .usb(_, let portPath) = device.address { object["portPath"] = portPath }
        return JSONOutput.string(object, [.sortedKeys])
    }
}
