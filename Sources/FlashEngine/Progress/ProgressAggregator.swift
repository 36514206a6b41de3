import Foundation
import Synchronization

/// Turns the byte counts a job reports into the events of docs/PROTOCOL.md.
///
/// - Speed: bytes over a sliding window of `speedWindow` seconds. The byte count at the window's
///   start is interpolated linearly between the two samples around it, so a steady rate gives that
///   rate exactly, a stall makes the speed fall linearly to 0 over one window, and a pause is seen
///   by the window as time with no bytes (samples are taken at `paused()` and `resumed()`). Until
///   the job is one window old the window starts at `start()` (0 bytes); with no span yet it is 0.
/// - ETA: remaining bytes / smoothed speed, rounded up to whole seconds. The smoothed speed is an
///   exponential moving average of the window speed with a time-based weight,
///   `alpha = 1 - exp(-dt / etaTimeConstant)` with `etaTimeConstant` = 3 s (at the default 4
///   emissions per second that is alpha ≈ 0.08 per emission). A time-based alpha makes the
///   smoothing independent of how often the job reports, and a steady rate is left unchanged.
///   The ETA is nil while the window speed is 0 (stalled, paused, not started) or unknown, and
///   when `totalBytes` is 0.
/// - Passes: a job may move the image's bytes more than once (a disk is written, then read back):
///   `passes` at creation, `beginPass` between them. Each pass reports its own bytes (0 to
///   `totalBytes`, which stays one pass's size: what a person knows as the image's size), while
///   the percentage, speed and ETA run over all passes together, as weighted stages that never
///   go back (fwupd's steps).
/// - Percentage: 100 * bytes / totalBytes rounded to one decimal (over all passes), capped at 99.9 until
///   `completed()` (the device may still be writing), never decreasing; 0 while `totalBytes` is 0.
/// - Rate limit: at most one `.progress` per `minInterval` seconds; a change that could not be sent
///   (stage, bytes, speed) is sent by the first `update`/`setStage`/`tick`/`resumed` after the
///   interval. Only the final 100% progress of `completed()` bypasses it. No `.progress` is sent
///   while paused (a dashboard would otherwise show a paused job as running).
/// - With `pacedByTicks`, periodic `.progress` comes from `tick()` alone, so that a scheduler
///   ticking all its jobs at once publishes their progress together (see
///   `EventBroadcaster.publishTogether`). The ticks must then come every `minInterval`; one up to
///   a tenth early still counts.
/// - Lifecycle events (`started`, `paused`, `resumed`, `completed`, `failed`) are always emitted,
///   in call order. Once `completed()` or `failed()` has run, everything else is ignored.
///
/// Thread safety: every method may be called from any thread. `emit` is called synchronously on the
/// calling thread while the aggregator's lock is held, so events reach it in exactly the order they
/// were produced. `emit` must be quick and must not call the aggregator's mutating methods
/// (it would deadlock); reading `latestSnapshot` or `replayEvents()` from it is fine (they have
/// their own lock).
public final class ProgressAggregator: Sendable {
    /// Time constant of the speed smoothing used for the ETA, in seconds.
    public static let etaTimeConstant: Double = 3.0

    public let job: JobInfo
    private let clock: any FlashClock
    private let emit: @Sendable (FlashEvent) -> Void
    private let state: Mutex<AggregatorState>
    private let replay = Mutex(ReplayState())

    /// - Parameters:
    ///   - totalBytes: the expected number of bytes (0 when unknown).
    ///   - minInterval: seconds between two `.progress` events (0.25: at most 4 per second).
    ///   - speedWindow: seconds of history the transfer speed is computed over.
    ///   - pacedByTicks: periodic progress only from `tick()` (see the type's notes).
    ///   - emit: receives every event, in order; see the type's notes on threads.
    public init(
        job: JobInfo,
        totalBytes: Int64,
        passes: Int = 1,
        clock: any FlashClock = SystemClock(),
        minInterval: Double = 0.25,
        speedWindow: Double = 2.0,
        pacedByTicks: Bool = false,
        emit: @escaping @Sendable (FlashEvent) -> Void
    ) {
        self.job = job
        self.clock = clock
        self.emit = emit
        self.state = Mutex(AggregatorState(
            job: job,
            totalBytes: max(0, totalBytes),
            passes: max(1, passes),
            minIntervalNanos: Self.nanos(seconds: minInterval, minimum: 0),
            windowNanos: Self.nanos(seconds: speedWindow, minimum: 1_000_000),
            createdNanos: clock.monotonicNanos(),
            pacedByTicks: pacedByTicks
        ))
    }

    // MARK: Feeding

    /// Emits `.queued` for a job that waits for its device or a slot; ignored once it has started.
    public func queued() {
        perform { state, _, epoch in state.queued(epoch: epoch) }
    }

    /// Emits `.started`. A second call is ignored.
    public func start(stage: String) {
        perform { $0.start(stage: stage, now: $1, epoch: $2) }
    }

    /// Changes the stage ("Sending boot 2/3", "Writing boot"); sent now if the rate limit allows,
    /// otherwise by the next emission.
    public func setStage(_ name: String) {
        perform { $0.setStage(name, now: $1, epoch: $2) }
    }

    /// Corrects the expected total once it is known exactly (for example after the image has been
    /// planned into downloads); the next progress event carries it.
    public func setTotalBytes(_ total: Int64) {
        perform { state, _, _ in
            state.totalBytes = max(0, total)
            return []
        }
    }

    /// Ends the current pass over the image and starts the next (see the type's notes).
    public func beginPass(stage: String) {
        perform { $0.beginPass(stage: stage, now: $1, epoch: $2) }
    }

    /// Cumulative bytes acknowledged by the device (in this pass). Decreases are ignored.
    public func update(bytesTransferred: Int64) {
        perform { $0.update(bytes: bytesTransferred, now: $1, epoch: $2) }
    }

    /// Sends pending state (a stage change, newer bytes, a decaying speed) if the interval has passed.
    public func tick() {
        perform { $0.tick(now: $1, epoch: $2) }
    }

    public func paused() {
        perform { $0.paused(now: $1, epoch: $2) }
    }

    public func resumed() {
        perform { $0.resumed(now: $1, epoch: $2) }
    }

    /// Emits a final `.progress` at exactly 100 (with `totalBytes` set to the bytes actually sent,
    /// which may be fewer or more than estimated), then `.completed` with the job's summary and,
    /// when the job knows them, the SHA-256 of what it wrote and whether it read it back equal.
    public func completed(sha256: String? = nil, verified: Bool? = nil) {
        perform { $0.completed(sha256: sha256, verified: verified, now: $1, epoch: $2) }
    }

    /// Emits `.failed`. `reason` says who stopped a job ended before its end (see `stopped(by:)`).
    public func failed(error: String, reason: String? = nil) {
        perform { $0.failed(error: error, reason: reason, now: $1, epoch: $2) }
    }

    /// Ends a job stopped before its end: `.failed` with the cause's message and `reason`.
    public func stopped(by cause: StopCause) {
        failed(error: cause.message, reason: cause.reason)
    }

    /// INFO/TEXT from the device; never rate-limited.
    public func deviceMessage(_ text: String) {
        perform { $0.deviceMessage(text, epoch: $2) }
    }

    // MARK: Reading

    /// The last `.progress` snapshot emitted, nil before the first.
    public var latestSnapshot: ProgressSnapshot? {
        replay.withLock { $0.lastProgress.flatMap { event -> ProgressSnapshot? in
            if case .progress(_, let snapshot, _) = event { return snapshot }
            return nil
        } }
    }

    /// What a client that connects now must be sent first (docs/PROTOCOL.md, "on connect"): the job's
    /// `flash_started`, its latest `flash_progress`, then `flash_paused` if it is paused.
    /// Empty before `start()` and after the job has ended.
    public func replayEvents() -> [FlashEvent] {
        replay.withLock { replay in
            guard let started = replay.started, !replay.ended else { return [] }
            var events = [started]
            if let progress = replay.lastProgress { events.append(progress) }
            if let paused = replay.paused { events.append(paused) }
            return events
        }
    }

    // MARK: Internals

    private func perform(_ body: (inout AggregatorState, UInt64, Int64) -> [FlashEvent]) {
        state.withLock { state in
            let events = body(&state, clock.monotonicNanos(), clock.epochMillis())
            guard !events.isEmpty else { return }
            replay.withLock { replay in
                for event in events { replay.record(event) }
            }
            for event in events { emit(event) }
        }
    }

    private static func nanos(seconds: Double, minimum: UInt64) -> UInt64 {
        guard seconds.isFinite, seconds > 0 else { return minimum }
        return max(minimum, UInt64((min(seconds, 1e9) * 1e9).rounded()))
    }
}

/// What `replayEvents()` and `latestSnapshot` need, under its own lock.
private struct ReplayState {
    var started: FlashEvent?
    var lastProgress: FlashEvent?
    var paused: FlashEvent?
    var ended = false

    mutating func record(_ event: FlashEvent) {
        switch event {
        case .started: started = event
        case .progress: lastProgress = event
        case .paused: paused = event
        case .resumed: paused = nil
        case .completed, .failed: ended = true; paused = nil
        case .deviceMessage, .queued: break
        }
    }
}

/// A point of the cumulative byte curve.
private struct Sample {
    var time: UInt64
    var bytes: Int64
}

/// The aggregator's arithmetic, kept free of locks and clocks: every method gets the time.
private struct AggregatorState {
    let job: JobInfo
    let minIntervalNanos: UInt64
    let windowNanos: UInt64
    /// Samples closer together than this are merged (the newest replaces the last), which bounds
    /// the window to a few hundred samples however often the job reports.
    let granularityNanos: UInt64
    let pacedByTicks: Bool

    /// One pass's expected bytes.
    var totalBytes: Int64
    let passes: Int
    var passIndex = 0
    /// Bytes moved by the passes before the current one.
    var passOffset: Int64 = 0
    /// Bytes of the current pass (what messages show).
    var passBytes: Int64 = 0
    /// Bytes moved over all passes: what speed and ETA are computed on.
    var bytes: Int64 = 0
    var stage = ""

    var startedAt: UInt64?
    let createdNanos: UInt64
    var isPaused = false
    var isFinished = false

    /// Samples of the byte curve; `samples[head...]` are live.
    var samples: [Sample] = []
    var head = 0

    var smoothedSpeed: Double?
    var smoothedAt: UInt64 = 0

    var lastProgressAt: UInt64?
    var lastSnapshot: ProgressSnapshot?

    init(job: JobInfo, totalBytes: Int64, passes: Int, minIntervalNanos: UInt64, windowNanos: UInt64, createdNanos: UInt64, pacedByTicks: Bool) {
        self.job = job
        self.passes = passes
        self.pacedByTicks = pacedByTicks
        self.totalBytes = totalBytes
        self.minIntervalNanos = minIntervalNanos
        self.windowNanos = windowNanos
        self.granularityNanos = max(1, windowNanos / 64)
        self.createdNanos = createdNanos
    }

    // MARK: Lifecycle

    func queued(epoch: Int64) -> [FlashEvent] {
        startedAt == nil && !isFinished ? [.queued(job, timestamp: epoch)] : []
    }

    mutating func start(stage: String, now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard startedAt == nil, !isFinished else { return [] }
        self.stage = stage
        startedAt = now
        record(Sample(time: now, bytes: bytes), now: now)
        return [.started(job, stage: stage, totalBytes: totalBytes, timestamp: epoch)]
    }

    /// Jobs must call `start` first; a job that ends without it still gets a `flash_started`,
    /// since clients ignore a job they have not seen start.
    private mutating func ensureStarted(now: UInt64, epoch: Int64) -> [FlashEvent] {
        startedAt == nil ? start(stage: stage, now: now, epoch: epoch) : []
    }

    mutating func paused(now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard !isFinished, !isPaused else { return [] }
        var events = emitIfDue(now: now, epoch: epoch)
        record(Sample(time: now, bytes: bytes), now: now)
        isPaused = true
        events.append(.paused(job, timestamp: epoch))
        return events
    }

    mutating func resumed(now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard !isFinished, isPaused else { return [] }
        record(Sample(time: now, bytes: bytes), now: now)
        isPaused = false
        return [.resumed(job, timestamp: epoch)] + emitIfDue(now: now, epoch: epoch)
    }

    mutating func completed(sha256: String?, verified: Bool?, now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard !isFinished else { return [] }
        var events = ensureStarted(now: now, epoch: epoch)
        record(Sample(time: now, bytes: bytes), now: now)
        let speed = windowSpeed(now: now)
        // The job's estimate may have been off (sparse chunks skipped, compressed sizes guessed):
        // the final message reports what was really sent, as 100% of itself.
        totalBytes = passBytes
        let final = ProgressSnapshot(
            progress: 100, stage: stage, bytesTransferred: passBytes, totalBytes: passBytes,
            transferSpeed: Int64(speed.rounded()), estimatedTimeRemaining: 0)
        lastSnapshot = final
        lastProgressAt = now
        isFinished = true
        events.append(.progress(job, final, timestamp: epoch))

        let elapsed = now >= (startedAt ?? now) ? now - (startedAt ?? now) : 0
        let average = elapsed > 0 ? Int64((Double(passBytes) * 1e9 / Double(elapsed)).rounded()) : 0
        let summary = JobSummary(bytes: passBytes, durationMs: Int64(elapsed / 1_000_000), averageSpeed: average, sha256: sha256, verified: verified)
        events.append(.completed(job, summary: summary, timestamp: epoch))
        return events
    }

    mutating func failed(error: String, reason: String?, now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard !isFinished else { return [] }
        var events = ensureStarted(now: now, epoch: epoch)
        isFinished = true
        events.append(.failed(job, error: error, reason: reason, timestamp: epoch))
        return events
    }

    func deviceMessage(_ text: String, epoch: Int64) -> [FlashEvent] {
        [.deviceMessage(job, text: text, timestamp: epoch)]
    }

    // MARK: Progress

    mutating func setStage(_ name: String, now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard !isFinished else { return [] }
        stage = name
        return pacedByTicks ? [] : emitIfDue(now: now, epoch: epoch)
    }

    mutating func update(bytes newBytes: Int64, now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard !isFinished else { return [] }
        if newBytes > passBytes {
            passBytes = newBytes
            bytes = passOffset + newBytes
            record(Sample(time: now, bytes: bytes), now: now)
        }
        return pacedByTicks ? [] : emitIfDue(now: now, epoch: epoch)
    }

    mutating func beginPass(stage name: String, now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard !isFinished, passIndex + 1 < passes else { return setStage(name, now: now, epoch: epoch) }
        passIndex += 1
        passOffset = bytes
        passBytes = 0
        return setStage(name, now: now, epoch: epoch)
    }

    /// Bytes all passes will move: those done, and a whole `totalBytes` for each pass to come.
    private var totalOverPasses: Int64 {
        passOffset + totalBytes * Int64(passes - passIndex)
    }

    mutating func tick(now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard !isFinished else { return [] }
        return emitIfDue(now: now, epoch: epoch, interval: pacedByTicks ? minIntervalNanos / 10 * 9 : minIntervalNanos)
    }

    /// A `.progress` if the job is running, the interval has passed, and something changed.
    private mutating func emitIfDue(now: UInt64, epoch: Int64, interval: UInt64? = nil) -> [FlashEvent] {
        guard startedAt != nil, !isPaused, !isFinished else { return [] }
        if let last = lastProgressAt, now < last || now - last < (interval ?? minIntervalNanos) { return [] }
        let snapshot = makeSnapshot(now: now)
        guard snapshot != lastSnapshot else { return [] }
        lastSnapshot = snapshot
        lastProgressAt = now
        return [.progress(job, snapshot, timestamp: epoch)]
    }

    private mutating func makeSnapshot(now: UInt64) -> ProgressSnapshot {
        let speed = windowSpeed(now: now)
        if let smoothed = smoothedSpeed {
            let dt = Double(now >= smoothedAt ? now - smoothedAt : 0) / 1e9
            let alpha = 1 - exp(-dt / ProgressAggregator.etaTimeConstant)
            smoothedSpeed = smoothed + alpha * (speed - smoothed)
        } else if speed > 0 {
            smoothedSpeed = speed
        }
        smoothedAt = now

        var percent = 0.0
        let total = totalOverPasses
        if totalBytes > 0 {
            percent = (100 * Double(bytes) / Double(total) * 10).rounded() / 10
            percent = min(percent, 99.9)
        }
        percent = max(percent, lastSnapshot?.progress ?? 0)

        var eta: Int64?
        if totalBytes > 0, speed > 0, let smoothed = smoothedSpeed, smoothed >= 1 {
            let remaining = Double(max(0, total - bytes))
            eta = Int64(min((remaining / smoothed).rounded(.up), Double(Int64.max / 2)))
        }
        return ProgressSnapshot(
            progress: percent, stage: stage, bytesTransferred: passBytes,
            totalBytes: max(totalBytes, passBytes), transferSpeed: Int64(speed.rounded()),
            estimatedTimeRemaining: eta)
    }

    // MARK: Speed window

    private mutating func record(_ sample: Sample, now: UInt64) {
        let live = samples.count - head
        if live >= 2, sample.time >= samples[samples.count - 2].time,
           sample.time - samples[samples.count - 2].time < granularityNanos {
            samples[samples.count - 1] = sample
        } else {
            samples.append(sample)
        }
        prune(now: now)
    }

    /// Drops samples before the window, keeping the last one at or before its start (the anchor
    /// for interpolating the byte count there).
    private mutating func prune(now: UInt64) {
        let windowStart = now >= windowNanos ? now - windowNanos : 0
        while samples.count - head >= 2, samples[head + 1].time <= windowStart {
            head += 1
        }
        if head >= 64, head * 2 >= samples.count {
            samples.removeFirst(head)
            head = 0
        }
    }

    /// Bytes per second over the window ending now.
    mutating func windowSpeed(now: UInt64) -> Double {
        prune(now: now)
        guard head < samples.count else { return 0 }
        let first = samples[head]
        let latest = samples[samples.count - 1].bytes
        guard now > first.time else { return 0 }
        let windowStart = now >= windowNanos ? now - windowNanos : 0
        if first.time >= windowStart {
            // The job is younger than the window (or the window starts exactly on a sample).
            return Double(latest - first.bytes) * 1e9 / Double(now - first.time)
        }
        var bytesAtStart = Double(first.bytes)
        if head + 1 < samples.count {
            let next = samples[head + 1]
            let fraction = Double(windowStart - first.time) / Double(next.time - first.time)
            bytesAtStart += Double(next.bytes - first.bytes) * fraction
        }
        return max(0, (Double(latest) - bytesAtStart) * 1e9 / Double(windowNanos))
    }
}
