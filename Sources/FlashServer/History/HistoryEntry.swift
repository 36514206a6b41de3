import FlashEngine
import GRDB

/// One job as the history keeps it: what was flashed where, and how it ended.
public struct HistoryEntry: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "job"

    public var jobId: String
    public var deviceId: String
    public var deviceName: String?
    public var image: String?
    public var partition: String?
    /// "fastboot" or "disk" (nil in rows written before disks were jobs: fastboot).
    public var target: String?
    /// Shared by the jobs of one disk batch.
    public var batchId: String?
    /// Disks: whether what was written was read back and found equal.
    public var verified: Bool?
    /// Disks: the medium written (serial and size).
    public var medium: String?
    /// Bytes the job expected to send.
    public var totalBytes: Int64
    /// Bytes the device acknowledged.
    public var bytesTransferred: Int64
    /// Disks: SHA-256 (hex) of everything written; set for completed jobs.
    public var sha256: String?
    /// Fastboot: XXH3-128 (hex, as `xxh128sum` writes it) of everything sent; set for completed
    /// jobs.
    public var xxh128: String?
    /// queued, running, paused, completed, failed, cancelled, or interrupted (the server stopped
    /// while the job was unfinished).
    public var result: String
    public var error: String?
    /// Milliseconds since the Unix epoch.
    public var createdAt: Int64
    public var startedAt: Int64?
    public var endedAt: Int64?
    public var durationMs: Int64?
    /// Bytes per second over the whole job.
    public var averageSpeed: Int64?
    /// The farm station that ran the job (nil outside a farm).
    public var station: String?

    public init(_ status: JobStatus) {
        jobId = status.info.jobId
        deviceId = status.info.deviceId
        deviceName = status.info.deviceName
        image = status.info.image
        partition = status.info.partition
        target = status.info.target.rawValue
        batchId = status.info.batchId
        verified = status.verified
        medium = status.info.medium
        totalBytes = status.totalBytes
        bytesTransferred = status.bytesTransferred
        sha256 = status.sha256
        xxh128 = status.xxh128
        result = status.state.rawValue
        error = status.error
        createdAt = status.createdAt
        startedAt = status.startedAt
        endedAt = status.endedAt
        durationMs = status.endedAt != nil ? status.durationMs(now: status.endedAt ?? 0) : nil
        averageSpeed = status.averageSpeed
        station = status.info.station
    }
}
