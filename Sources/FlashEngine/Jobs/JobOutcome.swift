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
    /// For disks: whether what was written was read back and found equal.
    public var verified: Bool?

    public init(state: JobState, error: String? = nil, bytesSent: Int64, sha256: String? = nil, verified: Bool? = nil) {
        self.state = state
        self.error = error
        self.bytesSent = bytesSent
        self.sha256 = sha256
        self.verified = verified
    }

    /// The one text a cancelled job ends with, on every face.
    public static let cancelledMessage = "Flash cancelled by user"

    public static func cancelled(bytesSent: Int64) -> JobOutcome {
        JobOutcome(state: .cancelled, error: cancelledMessage, bytesSent: bytesSent)
    }
}
