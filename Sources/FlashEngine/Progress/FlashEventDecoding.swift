import Foundation

extension FlashEvent {
    /// Reads one message of docs/PROTOCOL.md (or our `device_message`) back into an event, for clients
    /// of a server such as `flashctl flash --server`. nil for other types and malformed input.
    public init?(protocolJSON text: String) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let type = object["type"] as? String,
              let jobId = object["jobId"] as? String,
              let deviceId = object["deviceId"] as? String else { return nil }
        func int(_ key: String) -> Int64 { (object[key] as? NSNumber)?.int64Value ?? 0 }
        func string(_ key: String) -> String? { object[key] as? String }
        let job = JobInfo(
            jobId: jobId, deviceId: deviceId, deviceName: string("deviceName"), image: string("image"), partition: string("partition"),
            target: string("target").flatMap(JobTarget.init(rawValue:)) ?? .fastboot, batchId: string("batchId"), station: string("station"))
        let timestamp = int("timestamp")
        switch type {
        case "flash_queued":
            self = .queued(job, timestamp: timestamp)
        case "flash_started":
            self = .started(job, stage: string("stage") ?? "", totalBytes: int("totalBytes"), timestamp: timestamp)
        case "flash_progress":
            let eta = int("estimatedTimeRemaining")
            let snapshot = ProgressSnapshot(
                progress: (object["progress"] as? NSNumber)?.doubleValue ?? 0, stage: string("stage") ?? "",
                bytesTransferred: int("bytesTransferred"), totalBytes: int("totalBytes"),
                transferSpeed: int("transferSpeed"), estimatedTimeRemaining: eta > 0 ? eta : nil)
            self = .progress(job, snapshot, timestamp: timestamp)
        case "flash_completed":
            let summary = JobSummary(
                bytes: int("totalBytes"), durationMs: int("durationMs"), averageSpeed: int("averageSpeed"),
                sha256: string("sha256"), xxh128: string("xxh128"), verified: object["verified"] as? Bool)
            self = .completed(job, summary: summary, timestamp: timestamp)
        case "flash_failed":
            self = .failed(job, error: string("error") ?? "failed", reason: string("reason"), timestamp: timestamp)
        case "flash_paused":
            self = .paused(job, timestamp: timestamp)
        case "flash_resumed":
            self = .resumed(job, timestamp: timestamp)
        case "device_message":
            self = .deviceMessage(job, text: string("text") ?? "", timestamp: timestamp)
        default:
            return nil
        }
    }
}
