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
    /// Set when this server is a station of a farm.
    let farm: FarmLink?
    let starter: JobStarter

    func add(to router: Router<ServerRequestContext>) {
        let api = router.group("api")
        api.post("flash/start") { request, context in
            try await guarded { try await start(request, context) }
        }
        api.post("flash/update") { request, context in
            try await guarded {
                let body: UpdateRequestBody
                do {
                    body = try await request.decode(as: UpdateRequestBody.self, context: context)
                } catch {
                    throw APIError(.badRequest, "the body must be JSON like {\"deviceId\": \"SERIAL\", \"image\": \"image-oriole.zip\", \"slot\": \"b\", \"wipe\": false}")
                }
                if let farm, !farm.isReachable { throw farm.refusingNewJobs() }
                return try await starter.startUpdate(body)
            }
        }
        api.get("jobs") { _, _ in
            let now = SystemClock().epochMillis()
            return JobListBody(jobs: scheduler.jobs().map { JobBody($0, now: now) })
        }
        api.get("jobs/:id") { _, context in
            try await guarded {
                let id = try context.parameters.require("id")
                if let job = scheduler.job(id) { return JobBody(job, now: SystemClock().epochMillis()) }
                // Another station's job, as the farm last recorded it.
                if let farm, let entry = try? await farm.jobs.history(limit: 1, deviceId: nil, jobId: id).first {
                    return JobBody(farmEntry: entry)
                }
                throw FlashError(.unknownJob, "no job '\(id)'")
            }
        }
        for action in ["pause", "resume", "cancel"] {
            api.post("jobs/:id/\(action)") { _, context in
                try await guarded {
                    let id = try context.parameters.require("id")
                    if scheduler.job(id) == nil, let farm, let remote = try await farm.command(action, jobId: id) {
                        return remote
                    }
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
            DeviceListBody(devices: devices.devices(busy: scheduler.busyDevices()), station: farm?.stationName)
        }
        api.get("history") { request, _ in
            try await guarded {
                let query = request.uri.queryParameters
                let limit = min(max(query["limit"].flatMap { Int(String($0)) } ?? 100, 0), 10_000)
                let deviceId = query["deviceId"].map(String.init)
                if let farm {
                    do {
                        return HistoryListBody(jobs: try await farm.jobs.history(limit: limit, deviceId: deviceId))
                    } catch {
                        throw farm.unreachable(error)
                    }
                }
                return HistoryListBody(jobs: try history.recent(limit: limit, deviceId: deviceId))
            }
        }
        api.get("stations") { _, _ in
            try await guarded {
                // Not an error: a dashboard asks every server, and browsers log each 404 as one.
                guard let farm else { return StationListBody(farm: false, stations: []) }
                do {
                    return StationListBody(farm: true, stations: try await farm.stations.list())
                } catch {
                    throw farm.unreachable(error)
                }
            }
        }
        api.get("images") { _, _ in
            ImageListBody(directory: images.path, images: images.list(), station: farm?.stationName)
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
        if let farm, !farm.isReachable {
            throw farm.refusingNewJobs()
        }
        if let farm, let remote = try await farm.submitIfRemote(body) {
            return try remote.response(from: request, context: context)
        }
        switch try await starter.start(body) {
        case .one(var answer):
            // In a farm the answer always says where the job runs, this station included.
            answer.station = farm?.stationName
            return try answer.response(from: request, context: context)
        case .batch(let answer): return try answer.response(from: request, context: context)
        }
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
