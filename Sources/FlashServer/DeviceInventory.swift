import FlashEngine

/// The devices `GET /api/devices` lists: fastboot devices on USB and the server's emulated ones.
struct DeviceInventory: Sendable {
    let network: @Sendable () -> [FastbootDeviceInfo]

    func devices(busy: [String: String]) -> [DeviceBody] {
        let usb = (try? USBDiscovery.fastbootDevices().map(\.info)) ?? []
        return (usb + network()).map { info in
            var portPath: String?
            if case .usb(_, let path) = info.address { portPath = path }
            return DeviceBody(
                id: info.deviceId, kind: info.address.isUSB ? "fastboot-usb" : "fastboot-tcp",
                serial: info.serial, address: info.addressSelector, portPath: portPath,
                vidPid: info.vidPid, product: info.product,
                state: info.problem ?? (busy[info.deviceId] != nil ? "flashing" : "fastboot"),
                jobId: busy[info.deviceId]
            )
        }
    }
}

extension FastbootDeviceInfo.Address {
    var isUSB: Bool {
        if case .usb = self { return true }
        return false
    }
}
