/// One job behind every face: the CLI, the server's scheduler, the API and auto-flash hold a
/// job only through this, whatever it writes to.
///
/// A job is made by its target's `prepare` (which refuses bad input before anything is written)
/// and run once, on a thread of its own, to one `JobOutcome`; every step is reported through the
/// `ProgressAggregator` it is given, which it ends with `completed`, `failed` or `cancelled`.
public protocol FlashJob: AnyObject, Sendable {
    /// Who the job is: ids, device, image, target kind.
    var info: JobInfo { get }
    /// Pause, resume and cancel from any thread; obeyed at the next chunk.
    var control: JobControl { get }
    /// The bytes one pass over the image will move, as far as known before the job runs (0 when
    /// unknown, as for a compressed image that does not record its size).
    var expectedBytes: Int64 { get }
    /// How many times the image's bytes are moved: 2 when a disk is read back after writing.
    var passes: Int { get }
    /// Runs the job to its end on the calling thread, held to `limits` (bytes per second).
    func run(progress: ProgressAggregator, limits: [TokenBucket]) -> JobOutcome
}

extension FlashJob {
    public var passes: Int { 1 }

    /// A progress reporter for this job that emits to `emit`: what a face that runs one job
    /// itself (the CLI) uses.
    public func makeProgress(clock: any FlashClock = SystemClock(), rate: ProgressRate = .standard, pacedByTicks: Bool = false,
                             info: JobInfo? = nil, emit: @escaping @Sendable (FlashEvent) -> Void) -> ProgressAggregator {
        ProgressAggregator(job: info ?? self.info, totalBytes: expectedBytes, passes: passes, clock: clock, rate: rate, pacedByTicks: pacedByTicks, emit: emit)
    }
}

/// What a job writes to.
public enum JobTarget: String, Sendable, Codable {
    /// A partition of a fastboot device (USB or TCP).
    case fastboot
    /// A block device (USB drive, SD card) or a file standing in for one.
    case disk
}
