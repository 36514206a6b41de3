import FlashEngine
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOPosix

/// The HTTP API of docs/PROTOCOL.md. Routes only translate: every decision is the scheduler's.
struct APIRoutes: Sendable {
    let scheduler: JobScheduler
    let images: ImageDirectory
    let history: HistoryStore
    let devices: DeviceInventory
    let metrics: ServerMetrics
    /// `--allow-tcp`: "HOST" or "HOST:PORT".
    let allowedTCPDevices: [String]
    /// Set when this server is a station of a farm.
    let farm: FarmLink?

    func add(to router: Router<ServerRequestContext>) {
        let api = router.group("api")
        api.post("flash/start") { request, context in
            try await guarded { try await start(request, context) }
        }
        api.get("jobs") { _, _ in
            let now = SystemClock().epochMillis()
            return JobListBody(jobs: scheduler.jobs().map { JobBody($0, now: now) })
        }
        api.get("jobs/:id") { _, context in
            try guarded {
                let id = try context.parameters.require("id")
                guard let job = scheduler.job(id) else { throw FlashError(.unknownJob, "no job '\(id)'") }
                return JobBody(job, now: SystemClock().epochMillis())
            }
        }
        for action in ["pause", "resume", "cancel"] {
            api.post("jobs/:id/\(action)") { _, context in
                try guarded {
                    let id = try context.parameters.require("id")
                    let status: JobStatus
                    switch action {
                    case "pause": status = try scheduler.pause(id)
                    case "resume": status = try scheduler.resume(id)
                    default: status = try scheduler.cancel(id)
                    }
                    return JobCommandBody(jobId: id, status: action == "cancel" && !status.state.isFinished ? "cancelling" : status.state.rawValue)
                }
            }
        }
        api.get("jobs/:id/events") { request, context in
            try guarded { try events(request, context) }
        }
        api.get("devices") { _, _ in
            DeviceListBody(devices: devices.devices(busy: scheduler.busyDevices()))
        }
        api.get("history") { request, _ in
            try guarded {
                let query = request.uri.queryParameters
                let limit = query["limit"].flatMap { Int(String($0)) } ?? 100
                return HistoryListBody(jobs: try history.recent(limit: min(max(limit, 0), 10_000), deviceId: query["deviceId"].map(String.init)))
            }
        }
        api.get("stations") { _, _ in
            try await guarded {
                guard let farm else { throw APIError(.notFound, "this server is not a station of a farm (serve --farm)") }
                do {
                    return StationListBody(stations: try await farm.stations.list())
                } catch {
                    throw APIError(.serviceUnavailable, "the farm database at \(farm.url.redacted) is unreachable: \(FarmLink.describe(error))")
                }
            }
        }
        api.get("images") { _, _ in
            ImageListBody(directory: images.path, images: images.list())
        }
        router.get("metrics") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.text()))
            )
        }
    }

    private func start(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let body: StartRequestBody
        do {
            body = try await request.decode(as: StartRequestBody.self, context: context)
        } catch {
            throw APIError(.badRequest, "the body must be JSON like {\"deviceId\": \"SERIAL\", \"image\": \"boot.img\", \"partition\": \"boot\"}")
        }
        let disks = body.deviceIds ?? body.deviceId.map { [$0] } ?? []
        guard !disks.isEmpty else { throw APIError(.badRequest, "name the device: \"deviceId\" (or \"deviceIds\" for several disks)") }
        let path = try images.resolve(body.image)
        if disks.contains(where: isDiskPath) {
            return try await startDisks(disks, image: path, body: body, request: request, context: context)
        }
        guard disks.count == 1 else { throw APIError(.badRequest, "\"deviceIds\" names disks (/dev/...); a fastboot job takes one \"deviceId\"") }
        let selector = try DeviceSelector.parse(disks[0])
        if case .tcp(let host, let port) = selector { try checkTCPAllowed(host: host, port: port) }
        let flashRequest = FastbootFlashRequest(
            imagePath: path, partition: body.partition.flatMap { $0.isEmpty ? nil : $0 },
            device: selector, reboot: body.reboot ?? false)
        let status = try scheduler.submit(flashRequest, bandwidthLimit: body.bandwidthLimit)
        let answer = JobCommandBody(jobId: status.info.jobId, status: Self.startAnswer(status))
        return try answer.response(from: request, context: context)
    }

    /// One job per disk, fed by one read of the image. Each disk must come with the confirm token
    /// `GET /api/devices` gave for it, and pass every check the CLI makes without `--force`.
    private func startDisks(_ disks: [String], image: String, body: StartRequestBody, request httpRequest: Request, context: ServerRequestContext) async throws -> Response {
        guard disks.allSatisfy(isDiskPath) else {
            throw APIError(.badRequest, "disks and fastboot devices cannot be flashed in one request")
        }
        guard body.partition == nil, body.reboot == nil else {
            throw APIError(.badRequest, "\"partition\" and \"reboot\" apply to fastboot devices, not to disks")
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
            return try JobCommandBody(jobId: answer.jobs[0].jobId, status: answer.jobs[0].status).response(from: httpRequest, context: context)
        }
        return try answer.response(from: httpRequest, context: context)
    }

    /// Refuses, before anything connects, a TCP device neither emulated here nor in `--allow-tcp`.
    private func checkTCPAllowed(host: String, port: UInt16) throws {
        let emulated = devices.network().contains { $0.address == .tcp(host: host, port: port) }
        guard emulated || allowedTCPDevices.contains(host) || allowedTCPDevices.contains("\(host):\(port)") else {
            throw APIError(.forbidden, "tcp:\(host):\(port) is not a device this server may reach; start the server with --allow-tcp \(host):\(port) to allow it")
        }
    }

    private static func startAnswer(_ status: JobStatus) -> String {
        status.state == .queued ? "queued" : "started"
    }

    private func events(_ request: Request, _ context: ServerRequestContext) throws -> Response {
        let id = try context.parameters.require("id")
        let subscription = scheduler.broadcaster.subscribe(EventFilter(jobId: id, include: request.uri.queryParameters["include"].map(String.init)))
        guard scheduler.job(id) != nil else {
            subscription.close()
            throw FlashError(.unknownJob, "no job '\(id)'")
        }
        let body = ResponseBody { writer in
            defer { subscription.close() }
            while let batch = await subscription.nextMessages() {
                try await writer.write(ByteBuffer(string: batch.compactMap { $0.json.map { $0 + "\n" } }.joined()))
                if batch.contains(where: \.event.isTerminal) { break }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/x-ndjson", .cacheControl: "no-store"], body: body)
    }

    private func guarded<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw apiError(error) }
    }

    private func guarded<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch { throw apiError(error) }
    }
}
