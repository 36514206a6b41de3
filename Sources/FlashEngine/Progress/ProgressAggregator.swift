import Foundation
import Synchronization

/// Turns the byte counts a job reports into the events of docs/PROTOCOL.md.
///
/// - Time: speed and ETA run on the job's active time, which stops while it is paused, so a
///   resumed job is estimated from its pace, not from the pause.
/// - Bytes: what the device has taken (the transports report acknowledged bytes, not buffered
///   ones). Only `update` feeds the curve: the time before the first bytes (connecting, erasing)
///   is not part of the pace, nor are the bytes a device took from its buffers while the job was
///   paused (reported while paused or first after the resume).
/// - Speed: over the last `speedWindow` seconds of the byte curve up to its latest point (the
///   count at the window's start interpolated between the points around it), so a steady rate
///   gives that rate exactly whatever the size of the steps. A curve with no point for a
///   second is stalled: its window then ends now, and the speed falls to 0 over one window.
/// - ETA: the bytes still to go at the latest point over the speed, less the time since that
///   point, rounded to whole seconds. It is known once the pace has been seen for
///   `etaMinimumSpan` seconds over at least 3 points and is not stalled; until then it is nil
///   (0 on the wire) and, while bytes remain, the stage says " (estimating time left)".
/// - Passes: a job may move the image's bytes more than once (a disk is written, then read back):
///   `passes` at creation, `beginPass` between them. Each pass reports its own bytes (0 to
///   `totalBytes`, which stays one pass's size: what a person knows as the image's size), while
///   the percentage, speed and ETA run over all passes together, as weighted stages that never
///   go back (fwupd's steps).
/// - Percentage: 100 * bytes / totalBytes rounded to one decimal (over all passes), capped at 99.9 until
///   `completed()` (the device may still be writing), never decreasing; 0 while `totalBytes` is 0.
/// - Rate limit (`ProgressRate`): at most its `perSecond` `.progress` in any sliding second, the
///   final 100% of `completed()` included: regular ones are spaced so that at most one fewer fit
///   in a second, which leaves room for the final one whenever it comes. A change that could not
///   be sent (stage, bytes, speed) is sent by the first `update`/`setStage`/`tick`/`resumed` after
///   the interval. No `.progress` is sent while paused (a dashboard would otherwise show a paused
///   job as running).
/// - With `pacedByTicks`, periodic `.progress` comes from `tick()` alone, so that a scheduler
///   ticking all its jobs at once publishes their progress together (see
///   `EventBroadcaster.publishTogether`). The ticks must then come every `rate.spacing`; one up
///   to a tenth early still counts if the sliding second allows it.
/// - Lifecycle events (`started`, `paused`, `resumed`, `completed`, `failed`) are always emitted,
///   in call order. Once `completed()` or `failed()` has run, everything else is ignored.
///
/// Thread safety: every method may be called from any thread. `emit` is called synchronously on the
/// calling thread while the aggregator's lock is held, so events reach it in exactly the order they
/// were produced. `emit` must be quick and must not call the aggregator's mutating methods
/// (it would deadlock); reading `latestSnapshot` or `replayEvents()` from it is fine (they have
/// their own lock).
public final class ProgressAggregator: Sendable {
    /// Seconds of steady transfer before the ETA is given.
    public static let etaMinimumSpan: Double = 0.3
    /// Seconds without a new byte count after which the transfer is seen as stalled.
    public static let stallAfter: Double = 1.0
    /// Appended to the stage while bytes remain and the ETA is not known.
    public static let estimatingSuffix = " (estimating time left)"

    public let job: JobInfo
    private let clock: any FlashClock
    private let emit: @Sendable (FlashEvent) -> Void
    private let state: Mutex<AggregatorState>
    private let replay = Mutex(ReplayState())

    /// - Parameters:
    ///   - totalBytes: the expected number of bytes (0 when unknown).
    ///   - rate: how many `.progress` events may go out (see `ProgressRate`).
    ///   - speedWindow: seconds of active transfer the speed is computed over.
    ///   - pacedByTicks: periodic progress only from `tick()` (see the type's notes).
    ///   - emit: receives every event, in order; see the type's notes on threads.
    public init(
        job: JobInfo,
        totalBytes: Int64,
        passes: Int = 1,
        clock: any FlashClock = SystemClock(),
        rate: ProgressRate = .standard,
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
            rate: rate,
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
    /// when the job knows them, the digest of what it wrote and whether it read it back equal.
    public func completed(sha256: String? = nil, xxh128: String? = nil, verified: Bool? = nil) {
        perform { $0.completed(sha256: sha256, xxh128: xxh128, verified: verified, now: $1, epoch: $2) }
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

/// A point of the cumulative byte curve, in the job's active time.
private struct Sample {
    var time: UInt64
    var bytes: Int64
}

/// The aggregator's arithmetic, kept free of locks and clocks: every method gets the time.
private struct AggregatorState {
    let job: JobInfo
    let rate: ProgressRate
    let spacingNanos: UInt64
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
    var pausedAt: UInt64 = 0
    /// Time spent paused before the current pause.
    var pausedNanos: UInt64 = 0
    /// Resumed, and no bytes reported since.
    var resumedWithoutBytes = false
    var isFinished = false

    /// Samples of the byte curve, in active time; `samples[head...]` are live.
    var samples: [Sample] = []
    var head = 0
    /// Active time of the first sample: the pace is not known from before it.
    var firstSampleAt: UInt64?

    /// When the last regular `.progress` events went out, oldest first (at most `regularPerSecond`).
    var recentProgress: [UInt64] = []
    var lastProgressAt: UInt64?
    var lastSnapshot: ProgressSnapshot?

    init(job: JobInfo, totalBytes: Int64, passes: Int, rate: ProgressRate, windowNanos: UInt64, createdNanos: UInt64, pacedByTicks: Bool) {
        self.job = job
        self.passes = passes
        self.pacedByTicks = pacedByTicks
        self.totalBytes = totalBytes
        self.rate = rate
        self.spacingNanos = UInt64((rate.spacing * 1e9).rounded())
        self.windowNanos = windowNanos
        self.granularityNanos = max(1, windowNanos / 256)
        self.createdNanos = createdNanos
    }

    /// Time the job has been running and not paused, on the monotonic clock's scale.
    func activeTime(_ now: UInt64) -> UInt64 {
        let paused = pausedNanos + (isPaused && now >= pausedAt ? now - pausedAt : 0)
        return now >= paused ? now - paused : 0
    }

    // MARK: Lifecycle

    func queued(epoch: Int64) -> [FlashEvent] {
        startedAt == nil && !isFinished ? [.queued(job, timestamp: epoch)] : []
    }

    mutating func start(stage: String, now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard startedAt == nil, !isFinished else { return [] }
        self.stage = stage
        startedAt = now
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
        // While bytes flow, the pause counts from the latest byte count: what the device takes
        // between it and the resume is reported in one step after the resume, and is kept out of
        // the pace with the time it took.
        let active = activeTime(now)
        let sinceLatest = samples.last.map { active >= $0.time ? active - $0.time : 0 } ?? 0
        isPaused = true
        pausedAt = sinceLatest < UInt64(ProgressAggregator.stallAfter * 1e9) ? now - min(now, sinceLatest) : now
        events.append(.paused(job, timestamp: epoch))
        return events
    }

    mutating func resumed(now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard !isFinished, isPaused else { return [] }
        pausedNanos += now >= pausedAt ? now - pausedAt : 0
        isPaused = false
        resumedWithoutBytes = true
        return [.resumed(job, timestamp: epoch)] + emitIfDue(now: now, epoch: epoch)
    }

    mutating func completed(sha256: String?, xxh128: String?, verified: Bool?, now: UInt64, epoch: Int64) -> [FlashEvent] {
        guard !isFinished else { return [] }
        var events = ensureStarted(now: now, epoch: epoch)
        let speed = windowSpeed(now: now).speed
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
        let summary = JobSummary(bytes: passBytes, durationMs: Int64(elapsed / 1_000_000), averageSpeed: average, sha256: sha256, xxh128: xxh128, verified: verified)
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
            let added = passOffset + newBytes - bytes
            passBytes = newBytes
            bytes = passOffset + newBytes
            if isPaused || resumedWithoutBytes {
                // What the device took from its buffers while the job was paused took no active
                // time: it moves the whole curve, not its slope.
                for index in samples.indices.dropFirst(head) { samples[index].bytes += added }
            }
            resumedWithoutBytes = false
            record(Sample(time: activeTime(now), bytes: bytes))
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
        return emitIfDue(now: now, epoch: epoch, early: pacedByTicks)
    }

    /// A `.progress` if the job is running, the rate allows one, and something changed.
    private mutating func emitIfDue(now: UInt64, epoch: Int64, early: Bool = false) -> [FlashEvent] {
        guard startedAt != nil, !isPaused, !isFinished, rateAllows(now: now, early: early) else { return [] }
        let snapshot = makeSnapshot(now: now)
        guard snapshot != lastSnapshot else { return [] }
        lastSnapshot = snapshot
        lastProgressAt = now
        if rate.isLimited {
            recentProgress.append(now)
            if recentProgress.count > rate.regularPerSecond { recentProgress.removeFirst() }
        }
        return [.progress(job, snapshot, timestamp: epoch)]
    }

    /// Whether a regular `.progress` may go out now: `spacing` after the last one (a tick may
    /// come a tenth early), and fewer than `regularPerSecond` in the sliding second.
    private func rateAllows(now: UInt64, early: Bool) -> Bool {
        guard rate.isLimited else { return true }
        if let last = lastProgressAt {
            let interval = early ? spacingNanos / 10 * 9 : spacingNanos
            if now < last || now - last < interval { return false }
        }
        let windowStart = now >= ProgressRate.windowNanos ? now - ProgressRate.windowNanos : 0
        return recentProgress.filter { $0 > windowStart }.count < rate.regularPerSecond
    }

    private mutating func makeSnapshot(now: UInt64) -> ProgressSnapshot {
        let (speed, paceKnown) = windowSpeed(now: now)
        var percent = 0.0
        let total = totalOverPasses
        if totalBytes > 0 {
            percent = (100 * Double(bytes) / Double(total) * 10).rounded() / 10
            percent = min(percent, 99.9)
        }
        percent = max(percent, lastSnapshot?.progress ?? 0)

        var eta: Int64?
        if totalBytes > 0, paceKnown, speed >= 1, let latest = samples.last {
            let sinceLatest = Double(activeTime(now) - min(activeTime(now), latest.time)) / 1e9
            let left = Double(max(0, total - latest.bytes)) / speed - sinceLatest
            eta = Int64(min(max(0, left), Double(Int64.max / 2)).rounded())
        }
        var shownStage = stage
        if eta == nil, totalBytes > 0, !samples.isEmpty, bytes < total {
            shownStage += ProgressAggregator.estimatingSuffix
        }
        return ProgressSnapshot(
            progress: percent, stage: shownStage, bytesTransferred: passBytes,
            totalBytes: max(totalBytes, passBytes), transferSpeed: Int64(speed.rounded()),
            estimatedTimeRemaining: eta)
    }

    // MARK: Speed window

    private mutating func record(_ sample: Sample) {
        if firstSampleAt == nil { firstSampleAt = sample.time }
        let live = samples.count - head
        if live >= 2, sample.time >= samples[samples.count - 2].time,
           sample.time - samples[samples.count - 2].time < granularityNanos {
            samples[samples.count - 1] = sample
        } else {
            samples.append(sample)
        }
        prune(before: sample.time >= windowNanos ? sample.time - windowNanos : 0)
    }

    /// Drops samples before `start`, keeping the last one at or before it (the anchor for
    /// interpolating the byte count there).
    private mutating func prune(before start: UInt64) {
        while samples.count - head >= 2, samples[head + 1].time <= start {
            head += 1
        }
        if head >= 64, head * 2 >= samples.count {
            samples.removeFirst(head)
            head = 0
        }
    }

    /// Bytes per second over the window that ends at the latest sample (or now, once the curve
    /// has stalled), and whether that is a known pace to estimate from: long enough, over enough
    /// points, and not stalled.
    mutating func windowSpeed(now: UInt64) -> (speed: Double, paceKnown: Bool) {
        guard let latest = samples.last, let first = firstSampleAt else { return (0, false) }
        let active = activeTime(now)
        let stalled = active > latest.time && active - latest.time > UInt64(ProgressAggregator.stallAfter * 1e9)
        let end = stalled ? active : latest.time
        let start = max(first, end >= windowNanos ? end - windowNanos : 0)
        prune(before: start)
        guard end > start else { return (0, false) }
        let moved: Double = Double(latest.bytes) - bytes(at: start)
        let speed: Double = max(0, moved) * 1e9 / Double(end - start)
        let points = samples[head...].filter { $0.time >= start }.count
        let span = Double(end - start) / 1e9
        let paceKnown = !stalled && points >= 3 && span >= ProgressAggregator.etaMinimumSpan
        return (speed, paceKnown)
    }

    /// The byte count at `time`, interpolated between the live samples around it.
    private func bytes(at time: UInt64) -> Double {
        let anchor = samples[head]
        guard anchor.time < time else { return Double(anchor.bytes) }
        guard head + 1 < samples.count else { return Double(anchor.bytes) }
        let next = samples[head + 1]
        guard next.time > anchor.time, time < next.time else { return Double(next.bytes) }
        let fraction = Double(time - anchor.time) / Double(next.time - anchor.time)
        return Double(anchor.bytes) + Double(next.bytes - anchor.bytes) * fraction
    }
}
