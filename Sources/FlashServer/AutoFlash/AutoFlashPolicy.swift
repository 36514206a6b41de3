import FlashEngine

/// Whether a device udev just reported is auto-flashed: the rules, with nothing else in them, so
/// each can be checked without USB.
///
/// A device is followed by its USB port path: a device that re-enumerates on the same port (it
/// rebooted into its bootloader, or the job's own reboot at the end) is the same device.
enum AutoFlashPolicy {
    enum Decision: Equatable {
        case flash(AutoFlashProfile)
        /// Left alone, and why (for the log).
        case ignore(String)
        /// Left alone because of a mistake in the set-up (a profile name no profile has).
        case refuse(String)
    }

    /// The last auto-flash job started for a port.
    struct PortJob: Equatable {
        var jobId: String
        /// The serial of the device it was started for.
        var serial: String?
        /// Where it is; nil when neither the scheduler nor the history knows it any more.
        var state: JobState?
    }

    /// `completedBefore`: whether a serial has a completed job in the history (once-per-serial).
    static func decide(
        _ event: HotplugEvent, profiles: [String: AutoFlashProfile], lastJob: PortJob?, completedBefore: (String) -> Bool
    ) -> Decision {
        withMarkedProfile(event, profiles: profiles) { device, profile in
            let name = profile.name
            guard profile.target == .fastboot else {
                return .refuse("\(device) is a USB device, and profile '\(name)' writes disks (target: disk): not auto-flashed")
            }
            if let lastJob {
                let state = lastJob.state ?? .completed
                if !state.isFinished {
                    return .ignore("\(device) is already being flashed by \(lastJob.jobId) (\(state.rawValue)); it re-enumerated on the same port")
                }
                if state == .completed, lastJob.serial == event.serial {
                    return .ignore("\(device) was already flashed by \(lastJob.jobId); it re-enumerated on the same port after its job completed")
                }
            }
            if profile.oncePerSerial {
                guard let serial = event.serial else {
                    return .ignore("\(device) has no serial number, and profile '\(name)' flashes each serial only once: not auto-flashed")
                }
                if completedBefore(serial) {
                    return .ignore("\(device) was already flashed (the history has a completed job for serial \(serial)) and profile '\(name)' is once-per-serial")
                }
            }
            return .flash(profile)
        }
    }

    /// The same for a disk udev reported (`disk`: what the system says of it now, nil if nothing).
    /// What may not be written at all (mounted, system, not removable, read-only) is the job's
    /// own refusal, made where the CLI and the API make it.
    static func decideDisk(
        _ event: HotplugEvent, disk: DiskInfo?, profiles: [String: AutoFlashProfile], lastJob: PortJob?, writtenBefore: (String) -> Bool
    ) -> Decision {
        withMarkedProfile(event, profiles: profiles) { device, profile in
            let name = profile.name
            guard let write = profile.disk else {
                return .refuse("\(device) is a disk, and profile '\(name)' flashes fastboot devices (add target: disk): not auto-flashed")
            }
            guard let disk else {
                return .ignore("\(device): the system does not describe it (no /sys entry): not auto-flashed")
            }
            if let lastJob, !(lastJob.state ?? .completed).isFinished {
                return .ignore("\(device) is already being written by \(lastJob.jobId)")
            }
            if write.oncePerMedium {
                guard let medium = disk.medium else {
                    return .ignore("\(device) reports no serial number, and profile '\(name)' writes each medium only once (once-per-medium: false writes every card): not auto-flashed")
                }
                if writtenBefore(medium) {
                    return .ignore("\(device) holds a medium already written (serial and size \(medium)), and profile '\(name)' writes each medium once")
                }
            }
            return .flash(profile)
        }
    }

    /// The rule for the device's kind, given the profile an allow-list rule marked it with
    /// (`device`: how the log names it); or why it has none.
    private static func withMarkedProfile(
        _ event: HotplugEvent, profiles: [String: AutoFlashProfile], rule: (String, AutoFlashProfile) -> Decision
    ) -> Decision {
        let device = describe(event)
        guard let name = event.properties[AutoFlashService.profileProperty] else {
            return .ignore("\(device) has no \(AutoFlashService.profileProperty) (no allow-list rule matched it): not auto-flashed")
        }
        guard let profile = profiles[name] else {
            let known = profiles.keys.sorted().joined(separator: ", ")
            return .refuse("\(device) has \(AutoFlashService.profileProperty)=\(name), but the profiles file has no profile '\(name)' (known: \(known)): not auto-flashed")
        }
        return rule(device, profile)
    }

    /// "EMU0001 at usb:1-3", "disk /dev/sdb (serial X) at pci-...-usb-0:1.2:1.0-scsi-0:0:0:0".
    static func describe(_ event: HotplugEvent) -> String {
        if event.kind == .disk {
            return "disk \(event.devnode ?? "?")\(event.serial.map { " (serial \($0))" } ?? "") at \(event.portPath)"
        }
        return "\(event.serial.map { "device \($0)" } ?? "a device without serial") at usb:\(event.portPath)"
    }
}
