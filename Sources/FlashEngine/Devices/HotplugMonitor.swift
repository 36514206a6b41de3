import CLibUDev
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A USB device or a disk appearing or going away, as udev reports it.
public struct HotplugEvent: Sendable, Equatable {
    public enum Action: String, Sendable {
        case add
        case remove
    }

    public enum Kind: String, Sendable {
        /// A USB device (`usb_device`): a fastboot device, a hub, a card reader...
        case usb
        /// A whole disk (`block`/`disk`): a USB drive, an SD card in a reader's slot.
        case disk
    }

    public var action: Action
    public var kind: Kind
    /// Where the device is plugged in, what follows it across re-enumerations: for USB its sysfs
    /// name, which is its port path ("1-1.2"); for a disk udev's `ID_PATH` (the reader's slot),
    /// or its kernel name when udev has none.
    public var portPath: String
    public var serial: String?
    /// "18d1:4ee0" (USB devices).
    public var vidPid: String?
    /// The device node ("/dev/sdb"), for disks.
    public var devnode: String?
    /// The udev properties asked for (FLASHCTL_PROFILE, ...), when the device has them.
    public var properties: [String: String]

    public init(action: Action, kind: Kind = .usb, portPath: String, serial: String?, vidPid: String?, devnode: String? = nil, properties: [String: String]) {
        self.action = action
        self.kind = kind
        self.portPath = portPath
        self.serial = serial
        self.vidPid = vidPid
        self.devnode = devnode
        self.properties = properties
    }
}

/// Watches udev for USB devices (`usb_device`), and disks when asked, coming and going, through a
/// libudev monitor on a thread of its own; `devices()` lists the ones already there.
public final class HotplugMonitor: @unchecked Sendable {
    private let properties: [String]
    private let watchesDisks: Bool
    private let udev: OpaquePointer
    /// The pipe that stops the monitor thread, while it runs.
    private let wake = Mutex<[Int32]>([-1, -1])

    /// `properties`: the udev properties each event should carry, when set. `disks`: whole
    /// disks (`block`/`disk`) too.
    public init(properties: [String], disks: Bool = false) throws {
        guard let udev = udev_new() else { throw FlashError(.io, "libudev could not start (udev_new failed)") }
        self.udev = udev
        self.properties = properties
        watchesDisks = disks
    }

    deinit {
        stop()
        udev_unref(udev)
    }

    /// USB devices (and disks, when watched) present now, as `add` events.
    public func devices() -> [HotplugEvent] {
        list(subsystem: "usb", devtype: "usb_device") + (watchesDisks ? list(subsystem: "block", devtype: "disk") : [])
    }

    private func list(subsystem: String, devtype: String) -> [HotplugEvent] {
        guard let enumerate = udev_enumerate_new(udev) else { return [] }
        defer { udev_enumerate_unref(enumerate) }
        udev_enumerate_add_match_subsystem(enumerate, subsystem)
        udev_enumerate_add_match_property(enumerate, "DEVTYPE", devtype)
        udev_enumerate_scan_devices(enumerate)
        var events: [HotplugEvent] = []
        var entry = udev_enumerate_get_list_entry(enumerate)
        while let current = entry {
            if let path = udev_list_entry_get_name(current), let device = udev_device_new_from_syspath(udev, path) {
                if let event = event(device, action: .add) { events.append(event) }
                udev_device_unref(device)
            }
            entry = udev_list_entry_get_next(current)
        }
        return events
    }

    /// Starts delivering events to `handler` (on the monitor's thread) until `stop()`.
    public func start(_ handler: @escaping @Sendable (HotplugEvent) -> Void) throws {
        guard let monitor = udev_monitor_new_from_netlink(udev, "udev") else {
            throw FlashError(.io, "cannot watch udev events (udev_monitor_new_from_netlink failed): is this a system with udev?")
        }
        udev_monitor_filter_add_match_subsystem_devtype(monitor, "usb", "usb_device")
        if watchesDisks { udev_monitor_filter_add_match_subsystem_devtype(monitor, "block", "disk") }
        guard udev_monitor_enable_receiving(monitor) >= 0 else {
            udev_monitor_unref(monitor)
            throw FlashError(.io, "cannot watch udev events: \(errnoText(errno))")
        }
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            udev_monitor_unref(monitor)
            throw FlashError(.io, "cannot create a pipe: \(errnoText(errno))")
        }
        wake.withLock { $0 = fds }
        let loop = MonitorLoop(monitor: monitor, wakeFD: fds[0])
        do {
            try WorkerThread.start(name: "hotplug monitor") { [self] in
                loop.run { device, action in
                    if let event = self.event(device, action: action) { handler(event) }
                }
            }
        } catch {
            wake.withLock { $0 = [-1, -1] }
            fds.forEach { close($0) }
            udev_monitor_unref(monitor)
            throw error
        }
    }

    public func stop() {
        let fds = wake.withLock { wake in
            defer { wake = [-1, -1] }
            return wake
        }
        guard fds[1] >= 0 else { return }
        var byte: UInt8 = 1
        _ = write(fds[1], &byte, 1)
        close(fds[1])
        // The reading end is closed after the thread has seen the wake-up.
        DispatchQueue.global().asyncAfter(deadline: .now() + 1) { close(fds[0]) }
    }

    private func event(_ device: OpaquePointer, action: HotplugEvent.Action) -> HotplugEvent? {
        guard let name = udev_device_get_sysname(device).map({ String(cString: $0) }), !name.contains(":") else { return nil }
        func property(_ key: String) -> String? {
            udev_device_get_property_value(device, key).map { String(cString: $0) }
        }
        func attribute(_ key: String) -> String? {
            udev_device_get_sysattr_value(device, key).map { String(cString: $0).trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        var values: [String: String] = [:]
        for key in properties { values[key] = property(key) }
        if property("SUBSYSTEM") == "block" {
            guard property("DEVTYPE") == "disk" else { return nil }
            return HotplugEvent(
                action: action, kind: .disk, portPath: property("ID_PATH") ?? name,
                serial: property("ID_SERIAL_SHORT") ?? property("ID_SERIAL"), vidPid: nil,
                devnode: property("DEVNAME").map { $0.hasPrefix("/") ? $0 : "/dev/" + $0 } ?? "/dev/" + name,
                properties: values)
        }
        let vendor = property("ID_VENDOR_ID") ?? (action == .add ? attribute("idVendor") : nil)
        let product = property("ID_MODEL_ID") ?? (action == .add ? attribute("idProduct") : nil)
        return HotplugEvent(
            action: action, portPath: name,
            serial: property("ID_SERIAL_SHORT") ?? (action == .add ? attribute("serial") : nil),
            vidPid: vendor.flatMap { v in product.map { "\(v):\($0)" } },
            properties: values)
    }
}

/// The monitor's receive loop, owned by the monitor thread.
private final class MonitorLoop: @unchecked Sendable {
    private let monitor: OpaquePointer
    private let wakeFD: Int32

    init(monitor: OpaquePointer, wakeFD: Int32) {
        self.monitor = monitor
        self.wakeFD = wakeFD
    }

    /// Until the wake pipe is written: each add/remove goes to `deliver`.
    func run(_ deliver: (OpaquePointer, HotplugEvent.Action) -> Void) {
        defer { udev_monitor_unref(monitor) }
        var polls = [pollfd(fd: udev_monitor_get_fd(monitor), events: Int16(POLLIN), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        while true {
            let ready = poll(&polls, 2, -1)
            if ready < 0 {
                if errno == EINTR { continue }
                return
            }
            if polls[1].revents != 0 { return }
            guard polls[0].revents != 0, let device = udev_monitor_receive_device(monitor) else { continue }
            if let action = udev_device_get_action(device).map({ String(cString: $0) }).flatMap(HotplugEvent.Action.init(rawValue:)) {
                deliver(device, action)
            }
            udev_device_unref(device)
        }
    }
}
