/// A job as the HTTP API and the history show it.
public struct JobStatus: Sendable, Equatable {
    public var info: JobInfo
    public var state: JobState
    public var stage: String?
    /// Percentage 0...100 as last reported to clients.
    public var progress: Double
    public var bytesTransferred: Int64
    public var totalBytes: Int64
    public var transferSpeed: Int64
    public var estimatedTimeRemaining: Int64?
    public var error: String?
    public var sha256: String?
    public var xxh128: String?
    /// For disks: whether what was written was read back and found equal (nil while unknown).
    public var verified: Bool?
    /// Bytes per second this job is held to, when capped.
    public var bandwidthLimit: Int64?
    /// Milliseconds since the Unix epoch.
    public var createdAt: Int64
    public var startedAt: Int64?
    public var endedAt: Int64?

    public init(
        info: JobInfo, state: JobState, stage: String?, progress: Double, bytesTransferred: Int64, totalBytes: Int64,
        transferSpeed: Int64, estimatedTimeRemaining: Int64?, error: String?, sha256: String?, xxh128: String? = nil, verified: Bool? = nil, bandwidthLimit: Int64?,
        createdAt: Int64, startedAt: Int64?, endedAt: Int64?
    ) {
        self.info = info
        self.state = state
        self.stage = stage
        self.progress = progress
        self.bytesTransferred = bytesTransferred
        self.totalBytes = totalBytes
        self.transferSpeed = transferSpeed
        self.estimatedTimeRemaining = estimatedTimeRemaining
        self.error = error
        self.sha256 = sha256
        self.xxh128 = xxh128
        self.verified = verified
        self.bandwidthLimit = bandwidthLimit
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.endedAt = endedAt
    }

    /// Milliseconds from start to end (or to now for a running job, given `now`).
    public func durationMs(now: Int64) -> Int64? {
        guard let startedAt else { return nil }
        return max(0, (endedAt ?? now) - startedAt)
    }

    /// Bytes per second over the whole job, once it has ended.
    public var averageSpeed: Int64? {
        guard let startedAt, let endedAt, endedAt > startedAt else { return nil }
        return bytesTransferred * 1000 / (endedAt - startedAt)
    }
}
