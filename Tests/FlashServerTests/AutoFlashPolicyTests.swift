import FlashEngine
@testable import FlashServer
import Testing

/// What auto-flash does with each device udev reports (the end-to-end tests plug real emulated
/// USB devices in; these go through every rule).
@Suite struct AutoFlashPolicyTests {
    private let bench = AutoFlashProfile(name: "bench", erase: [], flash: [.init(partition: "boot", imagePath: "/i/boot.img")], reboot: false, oncePerSerial: false)
    private let once = AutoFlashProfile(name: "once", erase: [], flash: [.init(partition: "boot", imagePath: "/i/boot.img")], reboot: true, oncePerSerial: true)
    private var profiles: [String: AutoFlashProfile] { ["bench": bench, "once": once] }

    private func plug(_ serial: String?, port: String = "1-3", profile: String? = "bench") -> HotplugEvent {
        HotplugEvent(action: .add, portPath: port, serial: serial, vidPid: "18d1:4ee0", properties: profile.map { ["FLASHCTL_PROFILE": $0] } ?? [:])
    }

    private func decide(_ event: HotplugEvent, last: AutoFlashPolicy.PortJob? = nil, completed: Set<String> = []) -> AutoFlashPolicy.Decision {
        AutoFlashPolicy.decide(event, profiles: profiles, lastJob: last) { completed.contains($0) }
    }

    private func reason(_ decision: AutoFlashPolicy.Decision) -> String {
        switch decision {
        case .flash(let profile): return "flash \(profile.name)"
        case .ignore(let why), .refuse(let why): return why
        }
    }

    private let cards = AutoFlashProfile(name: "cards", target: .disk, disk: .init(imagePath: "/i/os.img", verify: true, oncePerMedium: true))

    private func insert(_ serial: String?, profile: String? = "cards") -> (HotplugEvent, DiskInfo) {
        let event = HotplugEvent(action: .add, kind: .disk, portPath: "pci-0000:00:14.0-usb-0:1.2.1:1.0-scsi-0:0:0:0", serial: serial, vidPid: nil,
                                 devnode: "/dev/sdb", properties: profile.map { ["FLASHCTL_PROFILE": $0] } ?? [:])
        let disk = DiskInfo(path: "/dev/sdb", name: "sdb", deviceNumber: "8:16", size: 1 << 30, model: "Reader", vendor: nil, serial: serial,
                            transport: "usb", removableFlag: true, readOnly: false, mountPoints: [], holdsSystem: false, backingFile: nil,
                            logicalBlockSize: 512, partitionOf: nil)
        return (event, disk)
    }

    private func decideDisk(_ inserted: (HotplugEvent, DiskInfo), last: AutoFlashPolicy.PortJob? = nil, written: Set<String> = []) -> AutoFlashPolicy.Decision {
        AutoFlashPolicy.decideDisk(inserted.0, disk: inserted.1, profiles: profiles.merging(["cards": cards]) { $1 }, lastJob: last) { written.contains($0) }
    }

    @Test func aCardInAMarkedSlotIsWrittenOnceByItsSerialAndSize() {
        #expect(decideDisk(insert("CARD1")) == .flash(cards))
        #expect(reason(decideDisk(insert("CARD1"), written: ["CARD1/1073741824"])) == "disk /dev/sdb (serial CARD1) at pci-0000:00:14.0-usb-0:1.2.1:1.0-scsi-0:0:0:0 holds a medium already written (serial and size CARD1/1073741824), and profile 'cards' writes each medium once")
        #expect(decideDisk(insert("CARD2"), written: ["CARD1/1073741824"]) == .flash(cards))
        #expect(reason(decideDisk(insert(nil))).contains("reports no serial number"))
        #expect(reason(decideDisk(insert("CARD1"), last: .init(jobId: "job_1", serial: "CARD1", state: .running))).contains("already being written by job_1"))
    }

    @Test func aDiskAndAFastbootProfileDoNotMix() {
        #expect(reason(decideDisk(insert("CARD1", profile: "bench"))).contains("profile 'bench' flashes fastboot devices (add target: disk)"))
        let usb = HotplugEvent(action: .add, portPath: "1-3", serial: "A", vidPid: "18d1:4ee0", properties: ["FLASHCTL_PROFILE": "cards"])
        let decision = AutoFlashPolicy.decide(usb, profiles: ["cards": cards], lastJob: nil) { _ in false }
        #expect(reason(decision).contains("profile 'cards' writes disks (target: disk)"))
        #expect(reason(decideDisk(insert("CARD1", profile: nil))).contains("has no FLASHCTL_PROFILE"))
    }

    @Test func aMarkedDeviceIsFlashedWithItsProfile() {
        #expect(decide(plug("A")) == .flash(bench))
    }

    @Test func anUnmarkedDeviceIsLeftAlone() {
        let decision = decide(plug("A", profile: nil))
        guard case .ignore(let why) = decision else { Issue.record("\(decision)"); return }
        #expect(why == "device A at usb:1-3 has no FLASHCTL_PROFILE (no allow-list rule matched it): not auto-flashed")
    }

    @Test func anUnknownProfileIsRefusedWithTheKnownNames() {
        let decision = decide(plug("A", profile: "pixel"))
        guard case .refuse(let why) = decision else { Issue.record("\(decision)"); return }
        #expect(why.contains("no profile 'pixel' (known: bench, once)"), "\(why)")
    }

    @Test func aDeviceReEnumeratingDuringItsJobIsNotFlashedTwice() {
        for state in [JobState.queued, .running, .paused] {
            let decision = decide(plug("A"), last: .init(jobId: "job_1", serial: "A", state: state))
            #expect(reason(decision).contains("already being flashed by job_1"), "\(decision)")
        }
    }

    @Test func afterACompletedJobTheSameSerialIsLeftAloneAndANewOneIsFlashed() {
        let done = AutoFlashPolicy.PortJob(jobId: "job_1", serial: "A", state: .completed)
        #expect(reason(decide(plug("A"), last: done)).contains("already flashed by job_1"))
        #expect(decide(plug("B"), last: done) == .flash(bench), "another device plugged into the same port")
        #expect(reason(decide(plug("A"), last: .init(jobId: "job_1", serial: "A", state: nil))).contains("already flashed"), "a forgotten job counts as done")
    }

    @Test func afterAFailedJobTheDeviceIsFlashedAgainWhenPluggedIn() {
        for state in [JobState.failed, .cancelled] {
            #expect(decide(plug("A"), last: .init(jobId: "job_1", serial: "A", state: state)) == .flash(bench))
        }
    }

    @Test func oncePerSerialAsksTheHistory() {
        #expect(reason(decide(plug("A", port: "1-4", profile: "once"), completed: ["A"])).contains("history has a completed job for serial A"))
        #expect(decide(plug("B", port: "1-4", profile: "once"), completed: ["A"]) == .flash(once))
        #expect(reason(decide(plug(nil, profile: "once"))).contains("has no serial number"))
        #expect(decide(plug("A", profile: "bench"), completed: ["A"]) == .flash(bench), "without once-per-serial the history does not matter")
    }
}
