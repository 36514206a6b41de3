import FlashEngine
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// How a station joins a farm (`serve --farm URL --station NAME`).
public struct FarmConfiguration: Sendable {
    /// The shared PostgreSQL, as a libpq URL (see `FarmDatabaseURL`).
    public var url: String
    /// This station's name in the farm: letters, digits, '.', '-' and '_'.
    public var station: String
    /// Where other stations' users reach this one (`http://HOST:PORT`); default: the address
    /// the server listens on, with the machine's name for an unspecified address.
    public var address: String?

    public init(url: String, station: String, address: String? = nil) {
        self.url = url
        self.station = station
        self.address = address
    }

    /// A station name as `--station` takes it.
    public static func isValidStationName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 63 && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }

    /// The machine's short host name: the default station name.
    public static func defaultStationName() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "station"
        return isValidStationName(host) ? host : "station"
    }
}

/// A station's link to its farm: the database client, this station's heartbeat every 2 s (with
/// its devices and running jobs), and the watch that declares silent stations lost.
final class FarmLink: Sendable {
    let url: FarmDatabaseURL
    let stations: FarmStations
    let jobs: FarmJobs
    private let relay: FarmRelay
    private let client: PostgresClient
    private let logger: Logger
    private let clientTask = Mutex<Task<Void, Never>?>(nil)
    /// Whether the last heartbeat reached the database (an outage is logged once).
    private let reachable = Atomic<Bool>(true)

    init(configuration: FarmConfiguration, scheduler: JobScheduler, starter: JobStarter, history: HistoryStore, logger: Logger) throws {
        guard FarmConfiguration.isValidStationName(configuration.station) else {
            throw FlashError(.io, "--station takes a name of letters, digits, '.', '-' and '_' (at most 63), not '\(configuration.station)'")
        }
        url = try FarmDatabaseURL.parse(configuration.url)
        // The pool's own reports are kept to errors: `describe` tells a person what went wrong.
        var poolLogger = logger
        poolLogger.logLevel = .error
        client = PostgresClient(configuration: url.clientConfiguration(), backgroundLogger: poolLogger)
        stations = FarmStations(client: client, name: configuration.station, logger: logger)
        jobs = FarmJobs(client: client, station: configuration.station, logger: logger)
        relay = FarmRelay(jobs: jobs, scheduler: scheduler, starter: starter, history: history, logger: logger)
        self.logger = logger
    }

    var stationName: String { stations.name }

    /// Connects, brings the schema up to date and takes the station's name; before the server
    /// listens, so that a station that cannot join never serves.
    func join(address: String) async throws {
        let client = self.client
        clientTask.withLock { $0 = Task { await client.run() } }
        do {
            var quiet = logger
            quiet.logLevel = .critical
            let connection = try await PostgresConnection.connect(configuration: url.connectionConfiguration(), id: 0, logger: quiet)
            do {
                try await FarmSchema.migrate(connection, logger: logger)
                try? await connection.close()
            } catch {
                try? await connection.close()
                throw error
            }
            try await stations.register(address: address)
            relay.start()
            // What a previous run kept while the database was away.
            relay.retryOutbox()
        } catch let error as FlashError {
            close()
            throw error
        } catch {
            close()
            throw FlashError(.io, "cannot join the farm at \(url.redacted): \(Self.describe(error))")
        }
    }

    /// The lost-station watch, after a heartbeat when `heartbeat` is given.
    func tick(heartbeat: (address: String, devices: [DeviceBody], runningJobs: Int)?) async {
        do {
            if let heartbeat {
                let json = String(decoding: try JSONOutput.encoder().encode(heartbeat.devices), as: UTF8.self)
                if try await !stations.heartbeat(address: heartbeat.address, devices: json, runningJobs: heartbeat.runningJobs) {
                    logger.error("station '\(stationName)' was taken over by another run of that name; registering again")
                    try await stations.register(address: heartbeat.address)
                }
            }
            for name in try await stations.declareLost() {
                logger.warning("station '\(name)' is lost: silent for \(Int(FarmStations.lostAfterSeconds)) s")
            }
            try await endJobsOfLostStations()
            if !reachable.exchange(true, ordering: .relaxed) {
                logger.notice("the farm database at \(url.redacted) is reachable again")
                relay.retryOutbox()
            }
        } catch {
            if reachable.exchange(false, ordering: .relaxed) {
                logger.error("the farm database at \(url.redacted) is unreachable: \(Self.describe(error))")
            }
        }
    }

    /// Every station's dashboards learn that the lost station's jobs ended: `flash_failed` with
    /// reason `station_lost`, sent as that station's messages.
    private func endJobsOfLostStations() async throws {
        let now = SystemClock().epochMillis()
        for job in try await jobs.interruptJobsOfLostStations() {
            let info = JobInfo(jobId: job.jobId, deviceId: job.deviceId, station: job.station)
            if let json = FlashEvent.failed(info, error: job.error, reason: "station_lost", timestamp: now).protocolJSON() {
                try await jobs.announce(json)
            }
        }
    }

    /// A clean stop: the station is shown stopped, then the client closes.
    func leave() async {
        do {
            try await stations.leave()
        } catch {
            logger.warning("could not tell the farm that station '\(stationName)' stopped: \(Self.describe(error))")
        }
        close()
    }

    /// False from a failed heartbeat to the next one that works: new jobs are refused meanwhile.
    var isReachable: Bool { reachable.load(ordering: .relaxed) }

    /// What an API request that needs the farm's database is told when it did not answer.
    func unreachable(_ error: any Error) -> APIError {
        APIError(.serviceUnavailable, "the farm database at \(url.redacted) is unreachable: \(Self.describe(error))")
    }

    /// What a start request is told while the database is away.
    func refusingNewJobs() -> APIError {
        APIError(.serviceUnavailable, "the farm database at \(url.redacted) is unreachable: new jobs are refused until it is back (running jobs go on)")
    }

    /// Called by the scheduler at every change of one of this station's jobs.
    func jobChanged(_ status: JobStatus) {
        relay.jobChanged(status)
    }

    /// A fastboot job for another station's device is recorded for that station to claim, and
    /// answered `queued` with the station; nil when the device is this station's (or unknown to
    /// the farm: the local checks then say what is wrong).
    func submitIfRemote(_ body: StartRequestBody) async throws -> JobCommandBody? {
        guard body.deviceIds == nil, let deviceId = body.deviceId, !isDiskPath(deviceId) else {
            if let wanted = body.station, wanted != stationName {
                throw APIError(.badRequest, "disks of another station are started at that station (\(wanted))")
            }
            return nil
        }
        if body.station == stationName { return nil }
        let target: String
        do {
            target = try await jobs.locate(deviceId: deviceId, wanted: body.station)
        } catch let error as APIError where error.status == .notFound && body.station == nil {
            return nil
        } catch let error as APIError {
            throw error
        } catch {
            throw refusingNewJobs()
        }
        if target == stationName { return nil }
        let jobId = JobID.make()
        let request = String(decoding: try JSONOutput.encoder().encode(body), as: UTF8.self)
        do {
            try await jobs.submit(jobId: jobId, to: target, deviceId: deviceId, request: request)
        } catch {
            throw refusingNewJobs()
        }
        return JobCommandBody(jobId: jobId, status: "queued", station: target)
    }

    /// Pause, resume or cancel of a job another station runs (or has not taken yet); nil for a
    /// job that is not another station's.
    func command(_ action: String, jobId: String) async throws -> JobCommandBody? {
        let found: (station: String, deviceId: String, state: String)?
        do {
            found = try await jobs.find(jobId: jobId)
        } catch {
            throw unreachable(error)
        }
        guard let found, found.station != stationName else { return nil }
        if let state = JobState(rawValue: found.state), state.isFinished {
            throw APIError(.conflict, "\(jobId) has already ended (\(state.rawValue)) at station '\(found.station)'")
        }
        if found.state == "submitted" {
            guard action == "cancel" else {
                throw APIError(.conflict, "\(jobId) has not started yet at station '\(found.station)'; only a running job can be paused or resumed")
            }
            if try await jobs.cancelWaiting(jobId: jobId) {
                let info = JobInfo(jobId: jobId, deviceId: found.deviceId, station: found.station)
                if let json = FlashEvent.failed(info, error: StopCause.user.message, reason: StopCause.user.reason, timestamp: SystemClock().epochMillis()).protocolJSON() {
                    try await jobs.announce(json)
                }
                return JobCommandBody(jobId: jobId, status: JobState.cancelled.rawValue, station: found.station)
            }
        }
        try await jobs.send(action, jobId: jobId, to: found.station)
        let status = ["pause": "pausing", "resume": "resuming", "cancel": "cancelling"][action] ?? action
        return JobCommandBody(jobId: jobId, status: status, station: found.station)
    }

    private func close() {
        relay.stop()
        clientTask.withLock { task in
            task?.cancel()
            task = nil
        }
    }

    /// PostgresNIO keeps the details of its errors out of their descriptions; a person needs them.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] { return message }
        if error.code == .sslUnsupported { return "the server does not offer TLS, which this sslmode requires" }
        if let underlying = error.underlying {
            let text = "\(underlying)"
            for (clue, meaning) in [("Connection refused", "connection refused"), ("connectTimeout", "no answer within \(FarmDatabaseURL.connectTimeoutSeconds) s"),
                                    ("No such file", "no server socket there"), ("Network is unreachable", "network unreachable")]
            where text.contains(clue) {
                return meaning
            }
            return text
        }
        return "\(error.code)"
    }
}

/// Runs as a service of the server's group until it shuts down, then leaves the farm: a
/// heartbeat every 2 s from the moment the server listens (its address is known then), and the
/// lost-station watch every second, so that a station killed just after its heartbeat is
/// declared lost about 10 s later, not 12.
struct FarmHeartbeat: Service {
    let link: FarmLink
    /// nil until the server listens.
    let address: @Sendable () -> String?
    let devices: @Sendable () async -> [DeviceBody]
    let runningJobs: @Sendable () -> Int

    func run() async throws {
        var lastBeat: ContinuousClock.Instant?
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            let now = ContinuousClock.now
            var beat: (address: String, devices: [DeviceBody], runningJobs: Int)?
            if let address = address(), lastBeat.map({ now - $0 >= .milliseconds(Int(FarmStations.heartbeatSeconds * 1000) - 50) }) ?? true {
                beat = (address, await devices(), runningJobs())
                lastBeat = now
            }
            await link.tick(heartbeat: beat)
            let pause: Duration = lastBeat == nil ? .milliseconds(20) : .seconds(1)
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
        }
        await link.leave()
    }
}
