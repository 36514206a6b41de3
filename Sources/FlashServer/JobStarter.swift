import FlashEngine
import Foundation
import NIOPosix

/// Turns a start request (`POST /api/flash/start`, or a farm job this station claimed) into jobs
/// on the scheduler, after every check the CLI makes.
struct JobStarter: Sendable {
    let scheduler: JobScheduler
    let images: ImageDirectory
    let devices: DeviceInventory
    /// `--allow-tcp`: "HOST" or "HOST:PORT".
    let allowedTCPDevices: [String]

    enum Answer {
        case one(JobCommandBody)
        case batch(BatchStartBody)
    }

    /// `jobId`: the id a farm job was given where it was submitted (fastboot devices only).
    func start(_ body: StartRequestBody, jobId: String? = nil) async throws -> Answer {
        let disks = body.deviceIds ?? body.deviceId.map { [$0] } ?? []
        guard !disks.isEmpty else { throw APIError(.badRequest, "name the device: \"deviceId\" (or \"deviceIds\" for several disks)") }
        let path = try images.resolve(body.image)
        if disks.contains(where: isDiskPath) {
            guard jobId == nil else { throw APIError(.badRequest, "disks of another station are started at that station") }
            return try await startDisks(disks, image: path, body: body)
        }
        guard disks.count == 1 else { throw APIError(.badRequest, "\"deviceIds\" names disks (/dev/...); a fastboot job takes one \"deviceId\"") }
        let selector = try DeviceSelector.parse(disks[0])
        if case .tcp(let host, let port) = selector { try checkTCPAllowed(host: host, port: port) }
        let flashRequest = FastbootFlashRequest(
            imagePath: path, partition: body.partition.flatMap { $0.isEmpty ? nil : $0 },
            device: selector, reboot: body.reboot ?? false, slot: try Self.slot(body.slot))
        let status = try scheduler.submit(flashRequest, bandwidthLimit: body.bandwidthLimit, jobId: jobId)
        return .one(JobCommandBody(jobId: status.info.jobId, status: Self.startAnswer(status)))
    }

    /// A factory image zip flashed as `fastboot update` does: one job (`POST /api/flash/update`).
    func startUpdate(_ body: UpdateRequestBody) async throws -> JobCommandBody {
        let path = try images.resolve(body.image)
        let selector = try DeviceSelector.parse(body.deviceId)
        if case .tcp(let host, let port) = selector { try checkTCPAllowed(host: host, port: port) }
        let slot = try Self.slot(body.slot)
        // Reading the zip's directory and android-info.txt: not on an event loop.
        let factory = try await NIOThreadPool.singleton.runIfActive { try FactoryImage.open(path: path) }
        let request = factory.request(device: selector, slot: slot, wipe: body.wipe ?? false, reboot: !(body.skipReboot ?? false))
        let status = try scheduler.submit(request, bandwidthLimit: body.bandwidthLimit)
        return JobCommandBody(jobId: status.info.jobId, status: Self.startAnswer(status))
    }

    /// One job per disk, fed by one read of the image. Each disk must come with the confirm token
    /// `GET /api/devices` gave for it, and pass every check the CLI makes without `--force`.
    private func startDisks(_ disks: [String], image: String, body: StartRequestBody) async throws -> Answer {
        guard disks.allSatisfy(isDiskPath) else {
            throw APIError(.badRequest, "disks and fastboot devices cannot be flashed in one request")
        }
        guard body.partition == nil, body.reboot == nil, body.slot == nil else {
            throw APIError(.badRequest, "\"partition\", \"slot\" and \"reboot\" apply to fastboot devices, not to disks")
        }
        let request = DiskFlashRequest(
            imagePath: image, targets: disks, verify: body.verify ?? true,
            confirmations: body.confirm?.tokens(for: disks) ?? [:])
        // Reading the image's header and /sys blocks: not on an event loop.
        let batch = try await NIOThreadPool.singleton.runIfActive { try DiskBatch.prepare(request) }
        let statuses = try scheduler.submit(batch: batch.jobs, bandwidthLimit: body.bandwidthLimit)
        let answer = BatchStartBody(
            batchId: batch.batchId,
            jobs: statuses.map { BatchStartBody.Job(jobId: $0.info.jobId, deviceId: $0.info.deviceId, status: Self.startAnswer($0)) })
        if answer.jobs.count == 1 {
            return .one(JobCommandBody(jobId: answer.jobs[0].jobId, status: answer.jobs[0].status))
        }
        return .batch(answer)
    }

    /// Refuses, before anything connects, a TCP device neither emulated here nor in `--allow-tcp`.
    private func checkTCPAllowed(host: String, port: UInt16) throws {
        let emulated = devices.network().contains { $0.address == .tcp(host: host, port: port) }
        guard emulated || allowedTCPDevices.contains(host) || allowedTCPDevices.contains("\(host):\(port)") else {
            throw APIError(.forbidden, "tcp:\(host):\(port) is not a device this server may reach; start the server with --allow-tcp \(host):\(port) to allow it")
        }
    }

    /// A body's `"slot"`; a bad one is the client's mistake (400).
    private static func slot(_ text: String?) throws -> SlotChoice? {
        do {
            return try text.map(SlotChoice.init)
        } catch let error as FlashError {
            throw APIError(.badRequest, error.message)
        }
    }

    private static func startAnswer(_ status: JobStatus) -> String {
        status.state == .queued ? "queued" : "started"
    }
}
