/// What a job reports, one value per message of docs/PROTOCOL.md, plus device text that only people read.
public enum FlashEvent: Equatable, Sendable {
    /// Waiting for its device or a free slot: not a protocol message, for clients that ask.
    case queued(JobInfo, timestamp: Int64)
    case started(JobInfo, stage: String, totalBytes: Int64, timestamp: Int64)
    case progress(JobInfo, ProgressSnapshot, timestamp: Int64)
    case completed(JobInfo, summary: JobSummary, timestamp: Int64)
    case failed(JobInfo, error: String, reason: String?, timestamp: Int64)
    case paused(JobInfo, timestamp: Int64)
    case resumed(JobInfo, timestamp: Int64)
    /// INFO or TEXT from the device: shown to the user, not a protocol message.
    case deviceMessage(JobInfo, text: String, timestamp: Int64)

    public var job: JobInfo {
        switch self {
        case .queued(let job, _), .started(let job, _, _, _), .progress(let job, _, _), .completed(let job, _, _),
             .failed(let job, _, _, _), .paused(let job, _), .resumed(let job, _),
             .deviceMessage(let job, _, _):
            return job
        }
    }

    /// `.completed` or `.failed`: the job's last event.
    public var isTerminal: Bool {
        switch self {
        case .completed, .failed: return true
        default: return false
        }
    }

    /// Lifecycle events are never dropped or coalesced; progress and device text may be.
    public var isLifecycle: Bool {
        switch self {
        case .progress, .deviceMessage: return false
        default: return true
        }
    }
}

/// Who a job is: the ids every protocol message carries, and what it writes.
public struct JobInfo: Equatable, Sendable {
    public var jobId: String
    public var deviceId: String
    public var deviceName: String?
    public var image: String?
    public var partition: String?
    public var target: JobTarget
    /// Set on the jobs of one disk batch (one read of the image feeding several disks).
    public var batchId: String?
    /// For disks: the medium written (serial and size), how auto-flash knows a card it has
    /// written before. Not sent in messages.
    public var medium: String?
    /// The station of a farm that runs the job (nil outside a farm).
    public var station: String?

    public init(jobId: String, deviceId: String, deviceName: String? = nil, image: String? = nil, partition: String? = nil,
                target: JobTarget = .fastboot, batchId: String? = nil, station: String? = nil) {
        self.jobId = jobId
        self.deviceId = deviceId
        self.deviceName = deviceName
        self.image = image
        self.partition = partition
        self.target = target
        self.batchId = batchId
        self.station = station
    }
}

/// One `flash_progress` worth of numbers.
public struct ProgressSnapshot: Equatable, Sendable {
    /// Percentage 0...100, never decreasing within a job.
    public var progress: Double
    public var stage: String
    public var bytesTransferred: Int64
    public var totalBytes: Int64
    /// Bytes per second over the recent window.
    public var transferSpeed: Int64
    /// Seconds, from a smoothed speed; nil while unknown.
    public var estimatedTimeRemaining: Int64?

    public init(progress: Double, stage: String, bytesTransferred: Int64, totalBytes: Int64, transferSpeed: Int64, estimatedTimeRemaining: Int64?) {
        self.progress = progress
        self.stage = stage
        self.bytesTransferred = bytesTransferred
        self.totalBytes = totalBytes
        self.transferSpeed = transferSpeed
        self.estimatedTimeRemaining = estimatedTimeRemaining
    }
}

/// The figures of a finished job.
public struct JobSummary: Equatable, Sendable {
    public var bytes: Int64
    public var durationMs: Int64
    /// Bytes per second over the whole job.
    public var averageSpeed: Int64
    /// Disks: SHA-256 (hex) of what was written.
    public var sha256: String?
    /// Fastboot: XXH3-128 (hex, as `xxh128sum` writes it) of what was sent.
    public var xxh128: String?
    /// For disks: whether what was written was read back and found equal (false: not checked).
    public var verified: Bool?

    public init(bytes: Int64, durationMs: Int64, averageSpeed: Int64, sha256: String? = nil, xxh128: String? = nil, verified: Bool? = nil) {
        self.bytes = bytes
        self.durationMs = durationMs
        self.averageSpeed = averageSpeed
        self.sha256 = sha256
        self.xxh128 = xxh128
        self.verified = verified
    }
}
