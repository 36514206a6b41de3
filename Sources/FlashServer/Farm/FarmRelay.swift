import FlashEngine
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// What ties a station's jobs to the farm while it runs:
/// - it listens on the farm's channel: a job notice for this station wakes the claimer, and every
///   other station's job messages go to this station's WebSocket clients as its own do;
/// - the claimer takes the jobs submitted for this station and starts them as the API would;
/// - this station's job messages go out to the others (lifecycle at once, progress once a second
///   per job), and each job's state is written to `farm_job` as it changes.
final class FarmRelay: Sendable {
    private let jobs: FarmJobs
    private let scheduler: JobScheduler
    private let starter: JobStarter
    private let logger: Logger
    private let wakes: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation
    private let history: HistoryStore
    private let changes: AsyncStream<Change>
    private let change: AsyncStream<Change>.Continuation

    private enum Change {
        case job(JobStatus)
        /// The database may be reachable again: write what the outbox holds.
        case retry
    }
    private let running = Mutex<(tasks: [Task<Void, Never>], outbound: EventSubscription?)>(([], nil))

    init(jobs: FarmJobs, scheduler: JobScheduler, starter: JobStarter, history: HistoryStore, logger: Logger) {
        self.jobs = jobs
        self.history = history
        self.scheduler = scheduler
        self.starter = starter
        self.logger = logger
        (wakes, wake) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
        (changes, change) = AsyncStream.makeStream()
    }

    private var station: String { jobs.station }

    func start() {
        let tasks = [
            Task { await self.listen() },
            Task { await self.claimWhenWoken() },
            Task { await self.announceUntilStopped() },
            Task { await self.recordChanges() },
        ]
        running.withLock { $0.tasks = tasks }
    }

    func stop() {
        change.finish()
        wake.finish()
        let (tasks, outbound) = running.withLock { running in
            defer { running = ([], nil) }
            return running
        }
        outbound?.close()
        tasks.forEach { $0.cancel() }
    }

    /// Called by the scheduler at every change of one of this station's jobs.
    func jobChanged(_ status: JobStatus) {
        change.yield(.job(status))
    }

    /// Called when the database answers again (and at start, for what a previous run kept).
    func retryOutbox() {
        change.yield(.retry)
    }

    private func listen() async {
        var failing = false
        var caughtUp = false
        while !Task.isCancelled {
            do {
                try await jobs.client.withConnection { connection in
                    try await connection.listen(on: FarmJobs.channel) { notifications in
                        failing = false
                        // Jobs submitted while nobody listened are claimed now.
                        wake.yield()
                        if !caughtUp {
                            caughtUp = true
                            await replayRunningElsewhere()
                        }
                        for try await notification in notifications {
                            handle(notification.payload)
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                if !failing { logger.error("listening to the farm failed: \(FarmLink.describe(error)); retrying every second") }
                failing = true
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Other stations' jobs that were running before this station listened: their start (and
    /// pause) go to this station's dashboards and its replay; their progress follows within a
    /// second, as the other stations send it.
    private func replayRunningElsewhere() async {
        do {
            let now = SystemClock().epochMillis()
            for job in try await jobs.runningElsewhere() {
                let entry = job.entry.flatMap { try? JSONDecoder().decode(HistoryEntry.self, from: Data($0.utf8)) }
                let info = JobInfo(
                    jobId: job.jobId, deviceId: job.deviceId, deviceName: entry?.deviceName, image: entry?.image, partition: entry?.partition,
                    target: entry?.target.flatMap(JobTarget.init(rawValue:)) ?? .fastboot, batchId: entry?.batchId, station: job.station)
                scheduler.broadcaster.publish(.started(info, stage: "Running at station \(job.station)", totalBytes: entry?.totalBytes ?? 0, timestamp: now))
                if job.paused { scheduler.broadcaster.publish(.paused(info, timestamp: now)) }
            }
        } catch {
            logger.error("could not read the farm's running jobs: \(FarmLink.describe(error))")
        }
    }

    private func handle(_ payload: String) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any],
              let type = object["type"] as? String, let from = object["station"] as? String else { return }
        if type == "farm_job" {
            if from == station { wake.yield() }
            return
        }
        if type == "farm_command" {
            guard from == station, let jobId = object["jobId"] as? String else { return }
            // Asked at another station: a refusal (a job already ended, say) is not news to anyone.
            switch object["action"] as? String {
            case "pause": _ = try? scheduler.pause(jobId)
            case "resume": _ = try? scheduler.resume(jobId)
            case "cancel": _ = try? scheduler.cancel(jobId)
            default: break
            }
            return
        }
        guard from != station, let event = FlashEvent(protocolJSON: payload) else { return }
        scheduler.broadcaster.publish(event)
    }

    private func claimWhenWoken() async {
        for await _ in wakes {
            while !Task.isCancelled {
                let claimed: [(jobId: String, deviceId: String, request: String)]
                do {
                    claimed = try await jobs.claim()
                } catch {
                    logger.error("claiming this station's farm jobs failed: \(FarmLink.describe(error))")
                    break
                }
                if claimed.isEmpty { break }
                for job in claimed { await run(job) }
            }
        }
    }

    /// Starts a claimed job as the API would have here; a job this station cannot run (no such
    /// image here, a device gone) ends at once, with the reason, for every station to see.
    private func run(_ job: (jobId: String, deviceId: String, request: String)) async {
        let body = try? JSONDecoder().decode(StartRequestBody.self, from: Data(job.request.utf8))
        do {
            guard let body else { throw APIError(.badRequest, "the job's request is unreadable") }
            _ = try await starter.start(body, jobId: job.jobId)
        } catch {
            let reason = "station '\(station)' refused the job: \(apiError(error).message)"
            let info = JobInfo(jobId: job.jobId, deviceId: job.deviceId, image: body?.image, partition: body?.partition, station: station)
            scheduler.broadcaster.publish(.failed(info, error: reason, reason: nil, timestamp: SystemClock().epochMillis()))
            do {
                try await jobs.record(jobId: job.jobId, deviceId: job.deviceId, state: JobState.failed.rawValue, error: reason, finished: true)
            } catch {
                logger.error("could not record that farm job \(job.jobId) was refused: \(FarmLink.describe(error))")
            }
        }
    }

    /// A subscription that overflowed (the database was slower than the jobs for a long while)
    /// is closed by the broadcaster: a new one takes its place, so the farm hears of the jobs again.
    private func announceUntilStopped() async {
        while !Task.isCancelled {
            let outbound = scheduler.broadcaster.subscribe(EventFilter(extraTypes: ["flash_queued"]), limit: 4096)
            running.withLock { $0.outbound = outbound }
            await announce(outbound)
            guard outbound.didOverflow else { return }
            logger.warning("this station's messages for the farm fell behind; some were not sent to the other stations")
        }
    }

    private func announce(_ outbound: EventSubscription) async {
        var lastProgress: [String: ContinuousClock.Instant] = [:]
        // While the database does not answer, one message a second is tried and the rest dropped:
        // waiting out the deadline for each would only pile them up.
        var failedAt: ContinuousClock.Instant?
        while let batch = await outbound.nextBatch() {
            for event in batch where event.job.station == station {
                let jobId = event.job.jobId
                if case .progress = event {
                    let now = ContinuousClock.now
                    // Progress comes every 250 ms at most: one in three or four goes out, so
                    // that another station's dashboards hear of the job at least once a second.
                    if let last = lastProgress[jobId], now - last < .milliseconds(750) { continue }
                    lastProgress[jobId] = now
                } else if event.isTerminal {
                    lastProgress[jobId] = nil
                }
                guard let json = event.protocolJSON() else { continue }
                if let failedAt, ContinuousClock.now - failedAt < .seconds(1) { continue }
                do {
                    try await jobs.announce(json)
                    failedAt = nil
                } catch {
                    if failedAt == nil { logger.error("telling the farm about this station's jobs failed: \(FarmLink.describe(error))") }
                    failedAt = .now
                }
            }
        }
    }

    /// Writes each job's state when it changes (the scheduler also reports every running job once
    /// a second, for the bytes the local history keeps). While the database is unreachable the
    /// newest state of each job waits in the station's SQLite outbox; it is written, oldest
    /// first and before anything newer, once the database answers. The row is keyed by job, so
    /// a job's record appears once however often it is written.
    private func recordChanges() async {
        var recorded: [String: JobState] = [:]
        var outboxMayHold = true
        for await change in changes {
            let item: FarmOutboxItem?
            switch change {
            case .retry:
                item = nil
            case .job(let status):
                if recorded[status.info.jobId] == status.state { continue }
                recorded[status.info.jobId] = status.state.isFinished ? nil : status.state
                item = FarmOutboxItem(
                    jobId: status.info.jobId, deviceId: status.info.deviceId, state: status.state.rawValue, error: status.error,
                    finished: status.state.isFinished, entry: JSONOutput.string(HistoryEntry(status)))
            }
            if outboxMayHold {
                outboxMayHold = await !writeOutbox()
            }
            guard let item else { continue }
            if outboxMayHold {
                keep(item)
                continue
            }
            do {
                try await write(item)
            } catch {
                logger.error("the farm database did not take job \(item.jobId)'s state (\(FarmLink.describe(error))); kept to be written when it is back")
                keep(item)
                outboxMayHold = true
            }
        }
    }

    private func write(_ item: FarmOutboxItem) async throws {
        try await jobs.record(jobId: item.jobId, deviceId: item.deviceId, state: item.state, error: item.error, finished: item.finished, entry: item.entry)
    }

    private func keep(_ item: FarmOutboxItem) {
        do {
            try history.keepForFarm(item)
        } catch {
            logger.error("could not keep job \(item.jobId)'s state for the farm: \(error)")
        }
    }

    /// Writes everything the outbox holds; true when it is empty afterwards.
    private func writeOutbox() async -> Bool {
        guard let items = try? history.farmOutbox() else { return false }
        for item in items {
            do {
                try await write(item)
                try history.removeFromFarmOutbox(jobId: item.jobId)
            } catch {
                return false
            }
        }
        if !items.isEmpty { logger.notice("wrote \(items.count) job state(s) kept while the farm database was unreachable") }
        return true
    }
}
