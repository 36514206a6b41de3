import FlashEngine

/// The devices `GET /api/devices` lists: fastboot devices on USB and the server's emulated ones.
struct DeviceInventory: Sendable {
    let network: @Sendable () -> [FastbootDeviceInfo]
    var disks: DiskDiscovery = DiskDiscovery()

    func devices(busy: [String: String]) -> [DeviceBody] {
        let usb = (try? USBDiscovery.fastbootDevices().map(\.info)) ?? []
        let fastboot = (usb + network()).map { info in
            var portPath: String?
            if case .usb(_, let path) = info.address { portPath = path }
            return DeviceBody(
                id: info.deviceId, deviceId: info.deviceId, kind: info.address.isUSB ? "fastboot-usb" : "fastboot-tcp",
                serial: info.serial, address: info.addressSelector, portPath: portPath,
                vidPid: info.vidPid, product: info.product,
                state: info.problem ?? (busy[info.deviceId] != nil ? "flashing" : "fastboot"),
                jobId: busy[info.deviceId]
            )
        }
        return fastboot + disks.disks().map { disk($0, busy: busy) }
    }

    private func disk(_ disk: DiskInfo, busy: [String: String]) -> DeviceBody {
        DeviceBody(
            id: disk.path, deviceId: disk.path, kind: "disk", serial: disk.serial, address: disk.path, portPath: disk.portPath,
            product: disk.description, state: busy[disk.path] != nil ? "flashing" : "ready", jobId: busy[disk.path],
            model: disk.model, sizeBytes: disk.size, transport: disk.transport, removable: disk.isRemovable,
            mounted: disk.isMounted, mountPoints: disk.mountPoints, system: disk.holdsSystem, readOnly: disk.readOnly,
            partitionOf: disk.partitionOf, confirm: disk.confirmationToken
        )
    }
}

extension JobScheduler {
    /// The job running (or paused) on each busy device, by device id.
    func busyDevices() -> [String: String] {
        Dictionary(jobs().filter { !$0.state.isFinished && $0.state != .queued }.map { ($0.info.deviceId, $0.info.jobId) }) { first, _ in first }
    }
}

extension FastbootDeviceInfo.Address {
    var isUSB: Bool {
        if case .usb = self { return true }
        return false
    }
}
