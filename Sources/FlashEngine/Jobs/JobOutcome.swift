/// Where a job is in its life.
public enum JobState: String, Sendable, Codable, CaseIterable {
    /// `interrupted`: ended unfinished because the server running it stopped.
    case queued, running, paused, completed, failed, cancelled, interrupted

    public var isFinished: Bool {
        switch self {
        case .completed, .failed, .cancelled, .interrupted: return true
        case .queued, .running, .paused: return false
        }
    }
}

/// Who stopped a job before its end: a person (Ctrl-C, the API's cancel, the dashboard), or the
/// server shutting down, which a dashboard must tell apart from a person's choice.
public enum StopCause: Sendable {
    case user, serverStopped

    /// The `flash_failed` message's `reason`.
    public var reason: String {
        switch self {
        case .user: return "cancelled"
        case .serverStopped: return "server_stopped"
        }
    }

    /// The one text such a job ends with, on every face.
    public var message: String {
        switch self {
        case .user: return "Flash cancelled by user"
        case .serverStopped: return "The server stopped before this flash finished"
        }
    }

    var endState: JobState {
        switch self {
        case .user: return .cancelled
        case .serverStopped: return .interrupted
        }
    }
}

/// How a job ended.
public struct JobOutcome: Sendable, Equatable {
    /// `.completed`, `.failed`, `.cancelled` or `.interrupted`.
    public var state: JobState
    public var error: String?
    /// Bytes the device acknowledged and was asked to write.
    public var bytesSent: Int64
    /// Disks: SHA-256 (hex) of every byte written, set when the job completed.
    public var sha256: String?
    /// Fastboot: XXH3-128 (hex, as `xxh128sum` writes it) of every byte sent, set when the job
    /// completed.
    public var xxh128: String?
    /// For disks: whether what was written was read back and found equal.
    public var verified: Bool?
    /// Whether the target may have changed: a disk got bytes, or a fastboot device was told to
    /// write or erase a partition (downloaded data alone changes nothing on it).
    public var targetTouched: Bool

    public init(state: JobState, error: String? = nil, bytesSent: Int64, sha256: String? = nil, xxh128: String? = nil, verified: Bool? = nil, targetTouched: Bool? = nil) {
        self.state = state
        self.error = error
        self.bytesSent = bytesSent
        self.sha256 = sha256
        self.xxh128 = xxh128
        self.verified = verified
        self.targetTouched = targetTouched ?? (bytesSent > 0)
    }

    public static func stopped(by cause: StopCause, bytesSent: Int64, targetTouched: Bool? = nil) -> JobOutcome {
        JobOutcome(state: cause.endState, error: cause.message, bytesSent: bytesSent, targetTouched: targetTouched)
    }
}
