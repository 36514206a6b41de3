import FlashEngine
import Foundation
import Logging
import Synchronization

/// `flashctl serve --auto-flash`: watches udev and starts a job, through the scheduler like any
/// other, for each fastboot device or disk that an allow-list rule gave `FLASHCTL_PROFILE` (see
/// `AutoFlashPolicy` for what is flashed and what is left alone): a card duplicator for the
/// slots of a card-reader hub as well as a fastboot bench. Devices already plugged in when it
/// starts count as plugged in then.
final class AutoFlashService: @unchecked Sendable {
    static let profileProperty = "FLASHCTL_PROFILE"

    let profiles: AutoFlashProfiles
    private let scheduler: JobScheduler
    private let history: HistoryStore
    private let logger: Logger
    private let monitor: HotplugMonitor
    /// The last job started at each port (USB port path or disk ID_PATH); held while a decision is
    /// made, which serialises them (the monitor thread and the start-up listing).
    private let ports = Mutex<[String: (jobId: String, serial: String?)]>([:])

    init(profiles: AutoFlashProfiles, scheduler: JobScheduler, history: HistoryStore, logger: Logger) throws {
        self.profiles = profiles
        self.scheduler = scheduler
        self.history = history
        self.logger = logger
        monitor = try HotplugMonitor(properties: [Self.profileProperty], disks: profiles.profiles.values.contains { $0.target == .disk })
    }

    /// Starts watching; devices already there are handled at once (those without the property,
    /// hubs and keyboards among them, are counted in one line rather than one line each).
    func start() throws {
        try monitor.start { [weak self] event in self?.handle(event) }
        let present = monitor.devices()
        let unmarked = present.filter { $0.properties[Self.profileProperty] == nil }
        for event in present where event.properties[Self.profileProperty] != nil { handle(event) }
        for event in unmarked { logger.debug("auto-flash: \(AutoFlashPolicy.describe(event)) has no \(Self.profileProperty): not auto-flashed") }
        if !unmarked.isEmpty {
            logger.info("auto-flash: \(unmarked.count) USB device(s) already plugged in have no \(Self.profileProperty): not auto-flashed")
        }
        logger.info("auto-flash: watching udev for USB devices\(monitorWatchesDisks ? " and disks" : "") with \(Self.profileProperty) (profiles: \(profiles.profiles.keys.sorted().joined(separator: ", ")) from \(profiles.path))")
    }

    func stop() {
        monitor.stop()
    }

    private var monitorWatchesDisks: Bool { profiles.profiles.values.contains { $0.target == .disk } }

    func handle(_ event: HotplugEvent) {
        ports.withLock { ports in
            switch event.action {
            case .add: plugged(event, ports: &ports)
            case .remove: unplugged(event, ports: ports)
            }
        }
    }

    private func plugged(_ event: HotplugEvent, ports: inout [String: (jobId: String, serial: String?)]) {
        let decision: AutoFlashPolicy.Decision
        if event.kind == .disk {
            let disk = event.devnode.flatMap { DiskDiscovery().disk(atPath: $0) }
            decision = AutoFlashPolicy.decideDisk(event, disk: disk, profiles: profiles.profiles, lastJob: lastJob(at: event.portPath, ports: ports)) { [scheduler, history] medium in
                scheduler.jobs().contains { $0.info.medium == medium && $0.state == .completed }
                    || ((try? history.hasCompleted(medium: medium)) ?? false)
            }
        } else {
            decision = AutoFlashPolicy.decide(event, profiles: profiles.profiles, lastJob: lastJob(at: event.portPath, ports: ports)) { [scheduler, history] serial in
                scheduler.jobs().contains { $0.info.deviceId == serial && $0.state == .completed }
                    || ((try? history.hasCompleted(deviceId: serial)) ?? false)
            }
        }
        switch decision {
        case .ignore(let why):
            logger.info("auto-flash: \(why)")
        case .refuse(let why):
            logger.warning("auto-flash: \(why)")
        case .flash(let profile):
            start(profile, for: event, ports: &ports)
        }
    }

    /// Submits the profile's job for the device, like any other job of the server.
    private func start(_ profile: AutoFlashProfile, for event: HotplugEvent, ports: inout [String: (jobId: String, serial: String?)]) {
        let device = AutoFlashPolicy.describe(event)
        let verb = event.kind == .disk ? "writing" : "flashing"
        do {
            let status: JobStatus
            if let write = profile.disk, let devnode = event.devnode {
                let batch = try DiskBatch.prepare(DiskFlashRequest(imagePath: write.imagePath, targets: [devnode], verify: write.verify))
                status = try scheduler.submit(batch.jobs[0])
            } else if let update = profile.update {
                status = try submitWhenListed(update.image.request(device: .usbPort(event.portPath), slot: update.slot, wipe: update.wipe, reboot: profile.reboot))
            } else {
                let first = profile.flash[0]
                status = try submitWhenListed(FastbootFlashRequest(
                    imagePath: first.imagePath, partition: first.partition, device: .usbPort(event.portPath), reboot: profile.reboot,
                    erase: profile.erase, extraImages: profile.flash.dropFirst().map { .init(imagePath: $0.imagePath, partition: $0.partition) }))
            }
            ports[event.portPath] = (status.info.jobId, event.serial)
            logger.info("auto-flash: \(verb) \(device) with profile '\(profile.name)' as \(status.info.jobId) (\(status.state.rawValue))")
        } catch {
            let message = (error as? FlashError)?.message ?? "\(error)"
            logger.error("auto-flash: not \(verb) \(device) with profile '\(profile.name)': \(message)")
        }
    }

    /// libusb learns of a new device from its own udev monitor, which may read the uevent a moment
    /// after ours: a device not listed yet is looked for again for up to a second.
    private func submitWhenListed(_ request: FastbootFlashRequest) throws -> JobStatus {
        var attempt = 0
        while true {
            do {
                return try scheduler.submit(request)
            } catch let error as FlashError where error.kind == .deviceSelection && attempt < 10 {
                attempt += 1
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
    }

    private func unplugged(_ event: HotplugEvent, ports: [String: (jobId: String, serial: String?)]) {
        guard let last = lastJob(at: event.portPath, ports: ports) else { return }
        let state = last.state?.rawValue ?? "forgotten"
        logger.info("auto-flash: \(AutoFlashPolicy.describe(event)) was unplugged (its job \(last.jobId): \(state))")
    }

    private func lastJob(at port: String, ports: [String: (jobId: String, serial: String?)]) -> AutoFlashPolicy.PortJob? {
        guard let last = ports[port] else { return nil }
        let state = scheduler.job(last.jobId)?.state ?? (try? history.entry(jobId: last.jobId)).flatMap { $0.flatMap { JobState(rawValue: $0.result) } }
        return AutoFlashPolicy.PortJob(jobId: last.jobId, serial: last.serial, state: state)
    }
}
