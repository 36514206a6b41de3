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
    /// "fastboot" or "disk".
    var target: String
    var batchId: String?
    /// The farm station running it (absent outside a farm).
    var station: String?
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
    var xxh128: String?
    /// Disks: whether what was written was read back equal.
    var verified: Bool?
    var bandwidthLimit: Int64?
    var createdAt: Int64
    var startedAt: Int64?
    var endedAt: Int64?
    var durationMs: Int64?
    var averageSpeed: Int64?

    /// Another station's job, as the farm recorded it at its last change of state (its live
    /// progress is on the WebSocket).
    init(farmEntry entry: HistoryEntry) {
        jobId = entry.jobId
        deviceId = entry.deviceId
        deviceName = entry.deviceName
        image = entry.image
        partition = entry.partition
        target = entry.target ?? JobTarget.fastboot.rawValue
        batchId = entry.batchId
        station = entry.station
        state = entry.result
        progress = entry.result == JobState.completed.rawValue ? 100 : 0
        bytesTransferred = entry.bytesTransferred
        totalBytes = entry.totalBytes
        transferSpeed = 0
        error = entry.error
        sha256 = entry.sha256
        xxh128 = entry.xxh128
        verified = entry.verified
        createdAt = entry.createdAt
        startedAt = entry.startedAt
        endedAt = entry.endedAt
        durationMs = entry.durationMs
        averageSpeed = entry.averageSpeed
    }

    init(_ status: JobStatus, now: Int64) {
        jobId = status.info.jobId
        deviceId = status.info.deviceId
        deviceName = status.info.deviceName
        image = status.info.image
        partition = status.info.partition
        target = status.info.target.rawValue
        batchId = status.info.batchId
        station = status.info.station
        state = status.state.rawValue
        stage = status.stage
        progress = status.progress
        bytesTransferred = status.bytesTransferred
        totalBytes = status.totalBytes
        transferSpeed = status.transferSpeed
        estimatedTimeRemaining = status.estimatedTimeRemaining
        error = status.error
        sha256 = status.sha256
        xxh128 = status.xxh128
        verified = status.verified
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
    /// In a farm: the station that runs the job, when it is another one.
    var station: String?
}

/// The answer to `POST /api/flash/start` for several disks: one job per disk, one batch.
struct BatchStartBody: Codable, ResponseEncodable {
    struct Job: Codable {
        var jobId: String
        var deviceId: String
        var status: String
    }

    var batchId: String?
    var jobs: [Job]
}

/// `POST /api/flash/start`'s body: a fastboot device (`deviceId`, `partition`) or disks
/// (`deviceId` or `deviceIds` naming `/dev/...`, each with its `confirm` token).
struct StartRequestBody: Codable {
    var deviceId: String?
    var deviceIds: [String]?
    var image: String
    var partition: String?
    /// Bytes per second this job may use.
    var bandwidthLimit: Int64?
    var reboot: Bool?
    /// Disks: the token `GET /api/devices` gave, as one string for one disk or by disk path.
    var confirm: ConfirmTokens?
    /// Disks: read everything back and compare (default true).
    var verify: Bool?
    /// In a farm: the station whose device this is (may be left out when the id is unique).
    var station: String?
    /// Fastboot: the A/B slot to write (a, b, other, all; default: the current one).
    var slot: String?
}

/// `POST /api/flash/update`: a factory image zip from the image directory, flashed as `fastboot update`.
struct UpdateRequestBody: Codable {
    var deviceId: String
    var image: String
    /// a, b, other or all (default: the current slot).
    var slot: String?
    var wipe: Bool?
    var skipReboot: Bool?
    var bandwidthLimit: Int64?
}

/// `confirm` as a client sends it: `"token"` for the one disk of `deviceId`, or
/// `{"/dev/sdb": "token", ...}`.
enum ConfirmTokens: Codable {
    case one(String)
    case byDisk([String: String])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let token = try? container.decode(String.self) {
            self = .one(token)
        } else {
            self = .byDisk(try container.decode([String: String].self))
        }
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .one(let token): try container.encode(token)
        case .byDisk(let tokens): try container.encode(tokens)
        }
    }

    func tokens(for disks: [String]) -> [String: String] {
        switch self {
        case .one(let token): return disks.count == 1 ? [disks[0]: token] : [:]
        case .byDisk(let tokens): return tokens
        }
    }
}

struct DeviceBody: Codable, ResponseEncodable {
    var id: String
    /// The same as `id`: what `POST /api/flash/start` takes.
    var deviceId: String
    /// fastboot-usb, fastboot-tcp or disk.
    var kind: String
    var serial: String?
    var address: String
    var portPath: String?
    var vidPid: String?
    var product: String?
    var state: String
    /// The job flashing it now, if any.
    var jobId: String?
    // Disks only.
    var model: String?
    var sizeBytes: Int64?
    var transport: String?
    var removable: Bool?
    var mounted: Bool?
    var mountPoints: [String]?
    var system: Bool?
    var readOnly: Bool?
    /// Set for a partition: the disk it is on.
    var partitionOf: String?
    /// What `POST /api/flash/start` must send back for this disk.
    var confirm: String?
}

struct DeviceListBody: Codable, ResponseEncodable {
    var devices: [DeviceBody]
    /// In a farm: the station these devices are at.
    var station: String?
}

/// One station of a farm, as `GET /api/stations` lists it.
struct StationBody: Codable, ResponseEncodable {
    var station: String
    /// Where its API and dashboard answer.
    var address: String
    /// online, lost (silent for 10 s) or stopped (it left cleanly).
    var state: String
    /// Milliseconds since the Unix epoch, by the database's clock.
    var lastSeen: Int64
    /// How long it has been silent, in milliseconds.
    var silentMs: Int64
    /// As its own `GET /api/devices` lists them; "offline" unless the station is online.
    var devices: [DeviceBody]
    var runningJobs: Int
}

struct StationListBody: Codable, ResponseEncodable {
    /// False on a server that is not a station of a farm (then `stations` is empty).
    var farm: Bool
    var stations: [StationBody]
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
    /// In a farm: the station whose image directory this is.
    var station: String?
}

/// What the server sends a WebSocket client whose command could not be done (to it alone).
struct CommandErrorMessage: Codable {
    var type = "error"
    var error: String
    var command: String?
    var jobId: String?
    var timestamp: Int64

    var json: String {
        JSONOutput.string(self)
    }
}
