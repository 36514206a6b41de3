/// Where a job is in its life.
public enum JobState: String, Sendable, Codable, CaseIterable {
    case queued, running, paused, completed, failed, cancelled

    public var isFinished: Bool {
        switch self {
        case .completed, .failed, .cancelled: return true
        case .queued, .running, .paused: return false
        }
    }
}

/// How a job ended.
public struct JobOutcome: Sendable, Equatable {
    /// `.completed`, `.failed` or `.cancelled`.
    public var state: JobState
    public var error: String?
    /// Bytes the device acknowledged and was asked to write.
    public var bytesSent: Int64
    /// SHA-256 (hex) of every byte sent, set when the job completed.
    public var sha256: String?
}
