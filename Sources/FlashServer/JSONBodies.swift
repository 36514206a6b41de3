import FlashEngine
import Foundation
import Hummingbird

/// A job in `GET /api/jobs` and `GET /api/jobs/{id}`.
struct JobBody: Codable, ResponseEncodable {
    var jobId: String
    var deviceId: String
    var deviceName: String?
    var image: String?
    var partition: String?
    var state: String
    var stage: String?
    var progress: Double
    var bytesTransferred: Int64
    var totalBytes: Int64
    /// Bytes per second.
    var transferSpeed: Int64
    /// Seconds.
    var estimatedTimeRemaining: Int64?
    var error: String?
    var sha256: String?
    var bandwidthLimit: Int64?
    var createdAt: Int64
    var startedAt: Int64?
    var endedAt: Int64?
    var durationMs: Int64?
    var averageSpeed: Int64?

    init(_ status: JobStatus, now: Int64) {
        jobId = status.info.jobId
        deviceId = status.info.deviceId
        deviceName = status.info.deviceName
        image = status.info.image
        partition = status.info.partition
        state = status.state.rawValue
        stage = status.stage
        progress = status.progress
        bytesTransferred = status.bytesTransferred
        totalBytes = status.totalBytes
        transferSpeed = status.transferSpeed
        estimatedTimeRemaining = status.estimatedTimeRemaining
        error = status.error
        sha256 = status.sha256
        bandwidthLimit = status.bandwidthLimit
        createdAt = status.createdAt
        startedAt = status.startedAt
        endedAt = status.endedAt
        durationMs = status.durationMs(now: now)
        averageSpeed = status.averageSpeed
    }
}

struct JobListBody: Codable, ResponseEncodable {
    var jobs: [JobBody]
}

/// The answer to `POST /api/flash/start` and to the control endpoints.
struct JobCommandBody: Codable, ResponseEncodable {
    var jobId: String
    var status: String
}

/// `POST /api/flash/start`'s body.
struct StartRequestBody: Codable {
    var deviceId: String
    var image: String
    var partition: String?
    /// Bytes per second this job may use.
    var bandwidthLimit: Int64?
    var reboot: Bool?
}

struct DeviceBody: Codable, ResponseEncodable {
    var id: String
    var kind: String
    var serial: String?
    var address: String
    var portPath: String?
    var vidPid: String?
    var product: String?
    var state: String
    /// The job flashing it now, if any.
    var jobId: String?
}

struct DeviceListBody: Codable, ResponseEncodable {
    var devices: [DeviceBody]
}

struct HistoryListBody: Codable, ResponseEncodable {
    var jobs: [HistoryEntry]
}

struct ImageBody: Codable {
    var name: String
    var size: Int64
    var modified: Int64
}

struct ImageListBody: Codable, ResponseEncodable {
    var directory: String
    var images: [ImageBody]
}

/// What the server sends a WebSocket client whose command could not be done (to it alone).
struct CommandErrorMessage: Codable {
    var type = "error"
    var error: String
    var command: String?
    var jobId: String?
    var timestamp: Int64

    var json: String {
        String(decoding: (try? JSONEncoder().encode(self)) ?? Data(), as: UTF8.self)
    }
}
