import ArgumentParser
import FlashEngine
import Foundation
import Synchronization

/// `flashctl flash --server URL ...`: submits the job to a running server and shows its progress
/// as if it ran here.
struct RemoteFlash {
    let command: FlashCommand

    func run() async throws {
        let client = ServerClient(server: command.serverURL, token: command.token, ca: command.ca)
        var body: [String: Any] = ["deviceId": command.device.first ?? "", "image": command.image, "reboot": command.reboot]
        if let partition = command.partition { body["partition"] = partition }
        if let slot = command.slot { body["slot"] = slot }
        if let limit = command.limit { body["bandwidthLimit"] = limit.value }
        if let station = command.station { body["station"] = station }
        guard !command.device.isEmpty else {
            let through = command.server != nil ? "--server" : "$FLASHCTL_SERVER (\(command.serverURL ?? ""))"
            throw ValidationError("flashing through \(through) needs --device (-d): the server flashes many devices")
        }
        let answer = try await client.request("POST", "/api/flash/start", body: body) as? [String: Any]
        guard let jobId = answer?["jobId"] as? String else {
            throw FlashError(.protocolViolation, "the server did not say which job it started")
        }
        let renderer = ProgressRenderer(json: ProgressRenderer.wantsJSON(flag: command.json))
        if let station = answer?["station"] as? String, !renderer.json {
            FileHandle.standardError.write(Data("\(jobId) runs at station \(station)\n".utf8))
        } else if answer?["status"] as? String == "queued", !renderer.json {
            FileHandle.standardError.write(Data("\(jobId) is queued behind another job on \(command.device.first ?? "the device")\n".utf8))
        }
        let (commands, sender) = AsyncStream<String>.makeStream()
        let interrupt = InterruptHandler {
            sender.yield(#"{"type":"cancel","jobId":"\#(jobId)"}"#)
        }
        defer { interrupt.cancel() }
        let seen = RemoteStages()
        let terminal = try await client.follow(jobId: jobId, onEvent: { event in
            seen.note(event)
            renderer.render(event)
        }, commands: commands)
        renderer.finish()
        if case .failed(let job, _, "cancelled"?, _)? = terminal, let signal = interrupt.signalReceived {
            let outcome = JobOutcome(state: .cancelled, bytesSent: 0, targetTouched: seen.touched)
            let device = "\(job.deviceId) (\(jobId) at \(client.baseURL))"
            throw CancelReport.exit(lines: [CancelReport.fastboot(outcome, partition: job.partition ?? command.partition ?? "the partition", device: device)], signal: signal)
        }
        guard case .completed = terminal else {
            throw ExitCode.failure
        }
    }
}

/// Whether a remote job's stages reached a write or an erase: a cancel after that may have left
/// the partition incomplete.
private final class RemoteStages: Sendable {
    private let reached = Mutex(false)

    func note(_ event: FlashEvent) {
        guard case .progress(_, let snapshot, _) = event else { return }
        if snapshot.stage.hasPrefix("Writing") || snapshot.stage.hasPrefix("Erasing") {
            reached.withLock { $0 = true }
        }
    }

    var touched: Bool { reached.withLock { $0 } }
}
