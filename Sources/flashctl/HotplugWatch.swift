import FlashEngine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `flashctl devices --watch`: USB devices as udev reports them coming and going, with the
/// auto-flash profile a rule gave them; what to check when writing an allow-list rule.
struct HotplugWatch {
    static let profileProperty = "FLASHCTL_PROFILE"
    let json: Bool

    func run() throws {
        let monitor = try HotplugMonitor(properties: [Self.profileProperty])
        let stop = StopRequest()
        try monitor.start { event in
            let line = json ? Self.json(event) : Self.text(event)
            ProgressRenderer.writeAll(line + "\n", to: STDOUT_FILENO)
        }
        ProgressRenderer.writeAll("watching udev for USB devices (Ctrl-C stops)\n", to: STDERR_FILENO)
        stop.wait()
        monitor.stop()
    }

    static func text(_ event: HotplugEvent) -> String {
        var parts = [event.action == .add ? "plugged" : "unplugged", "usb:\(event.portPath)"]
        if let vidPid = event.vidPid { parts.append(vidPid) }
        if let serial = event.serial { parts.append("serial \(serial)") }
        parts.append(event.properties[profileProperty].map { "profile \($0)" } ?? "no profile")
        return parts.joined(separator: "  ")
    }

    static func json(_ event: HotplugEvent) -> String {
        var object: [String: Any] = ["event": event.action.rawValue, "portPath": event.portPath]
        object["serial"] = event.serial
        object["vidPid"] = event.vidPid
        object["profile"] = event.properties[profileProperty]
        return JSONOutput.string(object, [.sortedKeys])
    }
}
