/// Which events a subscriber wants: PROTOCOL.md's `?jobId=` / `?deviceId=` filters, and whether
/// it asked for device text (not a protocol message, so only sent to clients that ask).
public struct EventFilter: Sendable, Equatable {
    public var jobId: String?
    public var deviceId: String?
    public var includeDeviceMessages: Bool

    public init(jobId: String? = nil, deviceId: String? = nil, includeDeviceMessages: Bool = false) {
        self.jobId = jobId
        self.deviceId = deviceId
        self.includeDeviceMessages = includeDeviceMessages
    }

    public func matches(_ event: FlashEvent) -> Bool {
        if !includeDeviceMessages, !event.isProtocolMessage { return false }
        let job = event.job
        if let jobId, job.jobId != jobId { return false }
        if let deviceId, job.deviceId != deviceId { return false }
        return true
    }
}
