import Foundation

/// Runs flash jobs of any kind (`FlashJob`): one at a time per device, many devices in parallel
/// up to a limit, the rest queued in the order they came. The jobs of a disk batch (one read of
/// the image feeding several disks) are queued together and start together. Every job's events
/// go to `broadcaster`.
///
/// Each running job has a thread of its own (the transports block); a timer ticks the running
/// jobs' progress so speed and ETA stay current through stalls.
public final class JobScheduler: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Jobs running at once; more wait in the queue.
        public var maxParallelJobs: Int
        /// Bytes per second for all jobs together, nil for no cap.
        public var totalBandwidth: Int64?
        /// How many `flash_progress` of one job may go out in any second.
        public var progressRate: ProgressRate
        /// Finished jobs kept for `GET /api/jobs` (the history keeps them all).
        public var finishedJobsKept: Int
        /// The farm station running the jobs, stamped on each job's messages and status.
        public var station: String?

        public init(maxParallelJobs: Int = 16, totalBandwidth: Int64? = nil, progressRate: ProgressRate = .standard, finishedJobsKept: Int = 200) {
            self.maxParallelJobs = max(1, maxParallelJobs)
            self.totalBandwidth = totalBandwidth
            self.progressRate = progressRate
            self.finishedJobsKept = finishedJobsKept
        }
    }

    public let configuration: Configuration
    public let broadcaster: EventBroadcaster
    /// Told about a job when it is submitted, starts, is paused or resumed, ends, and once a
    /// second while it runs (for the history).
    /// Called on the job's thread or the submitter's; must not call back into the scheduler's
    /// mutating methods synchronously.
    public var onJobChanged: (@Sendable (JobStatus) -> Void)?
    /// Finds the fastboot devices of the jobs `submit(_: FastbootFlashRequest)` prepares.
    public let finder: FastbootDeviceFinder
    private let clock: any FlashClock
    private let totalBucket: TokenBucket?
    /// Guards everything below; also waited on for the job threads to end.
    private let lock = NSCondition()
    private var entries: [String: JobEntry] = [:]
    private var order: [String] = []
    private var queue: [String] = []
    private var busyDevices: Set<String> = []
    private var runningCount = 0
    private var acceptingJobs = true
    /// Job threads not yet ended.
    private var liveThreads = 0
    /// When the running jobs were last reported as a checkpoint (`clock.monotonicNanos()`).
    private var lastCheckpoint: UInt64 = 0
    private var ticker: DispatchSourceTimer?

    public init(configuration: Configuration = Configuration(), finder: FastbootDeviceFinder = FastbootDeviceFinder(), broadcaster: EventBroadcaster = EventBroadcaster(), clock: any FlashClock = SystemClock()) {
        self.configuration = configuration
        self.finder = finder
        self.broadcaster = broadcaster
        self.clock = clock
        self.totalBucket = configuration.totalBandwidth.map { TokenBucket(bytesPerSecond: $0, clock: clock) }
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "flashctl.progress-ticker"))
        let interval = max(0.05, configuration.progressRate.spacing)
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [weak self] in self?.tickRunningJobs() }
        timer.resume()
        ticker = timer
    }

    deinit {
        ticker?.cancel()
    }

    // MARK: Commands

    /// Checks the request (image, partition, device) and starts the job, or queues it while its
    /// device is busy or the parallel limit is reached. Throws `FlashError` for bad input.
    @discardableResult
    /// `jobId`: an id given elsewhere (a farm job); a new one otherwise.
    public func submit(_ request: FastbootFlashRequest, bandwidthLimit: Int64? = nil, jobId: String? = nil) throws -> JobStatus {
        try Self.check(bandwidthLimit)
        return try submit(FastbootFlashJob.prepare(request, jobId: jobId ?? JobID.make(), finder: finder, clock: clock), bandwidthLimit: bandwidthLimit)
    }

    /// Starts a prepared job, or queues it while its device is busy or the parallel limit is reached.
    @discardableResult
    public func submit(_ job: any FlashJob, bandwidthLimit: Int64? = nil) throws -> JobStatus {
        try submit(batch: [job], bandwidthLimit: bandwidthLimit)[0]
    }

    /// Queues jobs that must run together (a disk batch's, fed by one read): they start at the
    /// same time, when every one's device is free and there are slots for all.
    @discardableResult
    public func submit(batch jobs: [any FlashJob], bandwidthLimit: Int64? = nil) throws -> [JobStatus] {
        try Self.check(bandwidthLimit)
        let broadcaster = self.broadcaster
        let created = clock.epochMillis()
        let added = jobs.map { job in
            var info = job.info
            info.station = configuration.station
            return JobEntry(job: job, info: info, progress: job.makeProgress(clock: clock, rate: configuration.progressRate, pacedByTicks: true, info: info) {
                broadcaster.publish($0)
            }, bandwidthLimit: bandwidthLimit, createdAt: created)
        }
        lock.lock()
        guard acceptingJobs else {
            lock.unlock()
            throw FlashError(.jobState, "the server is shutting down and takes no new jobs")
        }
        for entry in added {
            entries[entry.jobId] = entry
            order.append(entry.jobId)
            queue.append(entry.jobId)
        }
        let started = startQueuedJobsLocked()
        let statuses = added.map(\.status)
        lock.unlock()
        statuses.forEach(notify)
        for (entry, status) in zip(added, statuses) where status.state == .queued {
            entry.progress.queued()
        }
        started.forEach(launch)
        return statuses
    }

    private static func check(_ bandwidthLimit: Int64?) throws {
        if let bandwidthLimit, bandwidthLimit <= 0 {
            throw FlashError(.image, "a bandwidth limit must be a positive number of bytes per second")
        }
    }

    /// Holds a running job at its next chunk boundary and sends `flash_paused`.
    @discardableResult
    public func pause(_ jobId: String) throws -> JobStatus {
        let status = try command(jobId) { entry in
            guard entry.state == .running else {
                throw FlashError(.jobState, "\(jobId) is \(entry.state.rawValue); only a running job can be paused")
            }
            entry.job.control.pause()
            entry.state = .paused
            entry.progress.paused()
        }
        notify(status)
        return status
    }

    @discardableResult
    public func resume(_ jobId: String) throws -> JobStatus {
        let status = try command(jobId) { entry in
            guard entry.state == .paused else {
                throw FlashError(.jobState, "\(jobId) is \(entry.state.rawValue); only a paused job can be resumed")
            }
            entry.state = .running
            entry.progress.resumed()
            entry.job.control.resume()
        }
        notify(status)
        return status
    }

    /// Stops a job: a queued one at once, a running or paused one at its next chunk boundary
    /// (its `flash_failed` with the cause's reason follows when it has stopped).
    @discardableResult
    public func cancel(_ jobId: String, cause: StopCause = .user) throws -> JobStatus {
        var cancelledQueued: JobEntry?
        let status = try command(jobId) { entry in
            guard !entry.state.isFinished else {
                throw FlashError(.jobState, "\(jobId) has already \(entry.state == .completed ? "completed" : "ended (\(entry.state.rawValue))")")
            }
            entry.job.control.cancel(cause)
            if entry.state == .queued {
                queue.removeAll { $0 == jobId }
                entry.finish(.stopped(by: cause, bytesSent: 0), at: clock.epochMillis())
                cancelledQueued = entry
            }
        }
        if let entry = cancelledQueued {
            entry.progress.stopped(by: cause)
            notify(status)
        }
        return status
    }

    // MARK: Reading

    public func job(_ jobId: String) -> JobStatus? {
        lock.lock()
        defer { lock.unlock() }
        return entries[jobId]?.status
    }

    /// All known jobs, oldest first.
    public func jobs() -> [JobStatus] {
        lock.lock()
        defer { lock.unlock() }
        return order.compactMap { entries[$0]?.status }
    }

    // MARK: Shutdown

    /// Refuses new jobs, stops every queued and running one (`server_stopped`), and waits up to `timeout` seconds
    /// for running jobs to stop. Returns whether they all stopped in time.
    @discardableResult
    public func shutdown(timeout: Double) -> Bool {
        lock.lock()
        acceptingJobs = false
        let ids = order.filter { entries[$0].map { !$0.state.isFinished } ?? false }
        lock.unlock()
        for id in ids { _ = try? cancel(id, cause: .serverStopped) }
        let deadline = Date(timeIntervalSinceNow: timeout)
        lock.lock()
        while liveThreads > 0, lock.wait(until: deadline) {}
        let stopped = liveThreads == 0
        lock.unlock()
        ticker?.cancel()
        return stopped
    }

    // MARK: Internals

    private func command(_ jobId: String, _ body: (JobEntry) throws -> Void) throws -> JobStatus {
        lock.lock()
        defer { lock.unlock() }
        guard let entry = entries[jobId] else {
            throw FlashError(.unknownJob, "no job '\(jobId)'")
        }
        try body(entry)
        return entry.status
    }

    /// Moves queued jobs to running while devices and slots allow; called with `lock` held. The
    /// queued jobs of one batch start together or not at all (a batch larger than the parallel
    /// limit starts alone).
    private func startQueuedJobsLocked() -> [JobEntry] {
        var started: [JobEntry] = []
        var index = 0
        while index < queue.count, runningCount < configuration.maxParallelJobs {
            guard let entry = entries[queue[index]] else {
                queue.remove(at: index)
                continue
            }
            let group = entry.batchId.map { batch in queue.compactMap { entries[$0] }.filter { $0.batchId == batch } } ?? [entry]
            let fits = runningCount + group.count <= configuration.maxParallelJobs || runningCount == 0
            guard fits, group.allSatisfy({ !busyDevices.contains($0.deviceId) }) else {
                index += 1
                continue
            }
            let ids = Set(group.map(\.jobId))
            queue.removeAll { ids.contains($0) }
            let now = clock.epochMillis()
            for member in group {
                busyDevices.insert(member.deviceId)
                runningCount += 1
                member.state = .running
                member.startedAt = now
                started.append(member)
            }
        }
        return started
    }

    private func launch(_ entry: JobEntry) {
        lock.lock()
        liveThreads += 1
        lock.unlock()
        do {
            try runOnThread(entry)
        } catch {
            lock.lock()
            liveThreads -= 1
            lock.broadcast()
            lock.unlock()
            let message = "\(error)"
            entry.progress.failed(error: message)
            finished(entry, JobOutcome(state: .failed, error: message, bytesSent: 0))
        }
    }

    private func runOnThread(_ entry: JobEntry) throws {
        try WorkerThread.start(name: entry.jobId, responsive: true) { [self] in
            defer {
                lock.lock()
                liveThreads -= 1
                lock.broadcast()
                lock.unlock()
            }
            notify(entry.statusLocked(lock))
            var limits: [TokenBucket] = []
            if let limit = entry.bandwidthLimit { limits.append(TokenBucket(bytesPerSecond: limit, clock: clock)) }
            if let totalBucket { limits.append(totalBucket) }
            let outcome = entry.job.run(progress: entry.progress, limits: limits)
            finished(entry, outcome)
        }
    }

    private func finished(_ entry: JobEntry, _ outcome: JobOutcome) {
        lock.lock()
        entry.finish(outcome, at: clock.epochMillis())
        busyDevices.remove(entry.deviceId)
        runningCount -= 1
        let status = entry.status
        forgetOldJobsLocked()
        let started = startQueuedJobsLocked()
        lock.unlock()
        notify(status)
        started.forEach(launch)
    }

    private func forgetOldJobsLocked() {
        var finished = order.filter { entries[$0]?.state.isFinished ?? false }
        while finished.count > configuration.finishedJobsKept, let oldest = finished.first {
            finished.removeFirst()
            entries.removeValue(forKey: oldest)
            order.removeAll { $0 == oldest }
        }
    }

    private func tickRunningJobs() {
        let now = clock.monotonicNanos()
        lock.lock()
        let running = order.compactMap { entries[$0] }.filter { $0.state == .running }
        // Once a second, where every running job is (its bytes) goes to `onJobChanged` too: the
        // history then shows how far a job got even if the process is killed.
        let checkpoint = now >= lastCheckpoint + Self.checkpointInterval
        if checkpoint { lastCheckpoint = now }
        let statuses = checkpoint ? running.map(\.status) : []
        lock.unlock()
        // All jobs' progress of this tick goes out together: one write per client, not one per job.
        broadcaster.publishTogether {
            for entry in running { entry.progress.tick() }
        }
        statuses.forEach(notify)
    }

    /// Nanoseconds between two progress checkpoints of the running jobs.
    static let checkpointInterval: UInt64 = 1_000_000_000

    private func notify(_ status: JobStatus) {
        onJobChanged?(status)
    }
}

/// A job and what the scheduler knows of it; its mutable fields are guarded by the scheduler's lock.
private final class JobEntry: @unchecked Sendable {
    let job: any FlashJob
    let info: JobInfo
    let progress: ProgressAggregator
    let bandwidthLimit: Int64?
    let createdAt: Int64
    var state: JobState = .queued
    var startedAt: Int64?
    var endedAt: Int64?
    var outcome: JobOutcome?

    init(job: any FlashJob, info: JobInfo, progress: ProgressAggregator, bandwidthLimit: Int64?, createdAt: Int64) {
        self.job = job
        self.info = info
        self.progress = progress
        self.bandwidthLimit = bandwidthLimit
        self.createdAt = createdAt
    }

    var jobId: String { info.jobId }
    var deviceId: String { info.deviceId }
    var batchId: String? { info.batchId }

    func finish(_ outcome: JobOutcome, at time: Int64) {
        self.outcome = outcome
        state = outcome.state
        endedAt = time
    }

    func statusLocked(_ lock: NSCondition) -> JobStatus {
        lock.lock()
        defer { lock.unlock() }
        return status
    }

    var status: JobStatus {
        let snapshot = progress.latestSnapshot
        let completed = outcome?.state == .completed
        return JobStatus(
            info: info,
            state: state,
            stage: snapshot?.stage,
            progress: completed ? 100 : snapshot?.progress ?? 0,
            bytesTransferred: completed ? outcome?.bytesSent ?? 0 : snapshot?.bytesTransferred ?? 0,
            totalBytes: snapshot?.totalBytes ?? job.expectedBytes,
            transferSpeed: state.isFinished || state == .paused ? 0 : snapshot?.transferSpeed ?? 0,
            estimatedTimeRemaining: state.isFinished ? nil : snapshot?.estimatedTimeRemaining,
            error: outcome?.error,
            sha256: outcome?.sha256,
            xxh128: outcome?.xxh128,
            verified: outcome?.verified,
            bandwidthLimit: bandwidthLimit,
            createdAt: createdAt,
            startedAt: startedAt,
            endedAt: endedAt
        )
    }
}
