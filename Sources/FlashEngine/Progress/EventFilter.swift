/// Which events a subscriber wants: docs/PROTOCOL.md's `?jobId=` / `?deviceId=` filters, and which of
/// our own message types it asked for (`?include=device_message,flash_queued`): they are not
/// protocol messages, so only clients that ask get them.
public struct EventFilter: Sendable, Equatable {
    public var jobId: String?
    public var deviceId: String?
    /// `protocolType`s of non-protocol messages to send too.
    public var extraTypes: Set<String>

    public static let extraTypesOffered: Set<String> = ["device_message", "flash_queued"]

    public init(jobId: String? = nil, deviceId: String? = nil, extraTypes: Set<String> = []) {
        self.jobId = jobId
        self.deviceId = deviceId
        self.extraTypes = extraTypes.intersection(Self.extraTypesOffered)
    }

    /// From an `include` query value: a comma-separated list of types.
    public init(jobId: String? = nil, deviceId: String? = nil, include: String?) {
        self.init(jobId: jobId, deviceId: deviceId, extraTypes: Set((include ?? "").split(separator: ",").map(String.init)))
    }

    public func matches(_ event: FlashEvent) -> Bool {
        if !event.isProtocolMessage, !extraTypes.contains(event.protocolType) { return false }
        let job = event.job
        if let jobId, job.jobId != jobId { return false }
        if let deviceId, job.deviceId != deviceId { return false }
        return true
    }
}
