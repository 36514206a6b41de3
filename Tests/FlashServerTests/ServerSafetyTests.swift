import FlashEngine
@testable import FlashServer
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// Bad input, refusals and restarts: the server answers clearly and keeps serving.
@Suite(.serialized) struct ServerSafetyTests {
    @Test func malformedUnknownAndOversizedMessagesAreAnsweredWithoutHarm() async throws {
        let harness = try await ServerHarness.start(devices: 1)
        defer { harness.removeFiles() }
        let client = try await harness.connect()
        client.sendRaw("this is not json")
        client.sendRaw(#"{"type":"reboot_everything","jobId":"job_1"}"#)
        client.sendRaw(#"{"type":"pause","jobId":"job_deadbeef"}"#)
        client.sendRaw(#"{"type":"cancel"}"#)
        client.sendRaw(#"[1,2,3]"#)
        try await client.wait(until: { $0.filter { $0["type"] as? String == "error" }.count == 5 })
        let errors = client.messages(ofType: "error").compactMap { $0["error"] as? String }
        #expect(errors[0].contains("not a JSON object"))
        #expect(errors[1].contains("unknown command type 'reboot_everything'"))
        #expect(errors[2] == "no job 'job_deadbeef'")
        #expect(errors[3].contains("needs a \"jobId\""))
        client.send(["type": "ping", "timestamp": 2])
        try await client.wait(until: { $0.filter { $0["type"] as? String == "pong" }.count == 2 })
        #expect(!client.isClosed, "the connection stays open after bad commands")

        // A frame over the limit closes that connection only (1009), the server goes on.
        let big = try await harness.connect()
        big.sendRaw(#"{"type":"ping","pad":""# + String(repeating: "x", count: 100_000) + #""}"#)
        try await big.wait(until: { _ in big.isClosed })
        #expect(big.closeStatus == 1009)
        // 2 MiB frames, still being sent when the server decides, and one of 12 MiB, over the 4 MiB
        // the server reads whole (refused at its header): the client sees 1009 too.
        for size in [2 << 20, 2 << 20, 2 << 20, 12 << 20] {
            let huge = try await harness.connect()
            huge.sendRaw(#"{"type":"ping","pad":""# + String(repeating: "x", count: size) + #""}"#)
            try await huge.wait(until: { _ in huge.isClosed })
            #expect(huge.closeStatus == 1009)
        }
        client.send(["type": "ping", "timestamp": 3])
        try await client.wait(until: { $0.filter { $0["type"] as? String == "pong" }.count == 3 })
        let pong = try #require(client.messages(ofType: "pong").last)
        #expect(pong["timestamp"] is Int)
        await harness.stop()
    }

    @Test func httpErrorsAreJSONWithFittingStatus() async throws {
        let harness = try await ServerHarness.start(devices: 1)
        defer { harness.removeFiles() }
        try harness.makeImage("boot.img", bytes: 4096)
        let unknownDevice = try await harness.http("POST", "/api/flash/start", body: ["deviceId": "NOPE", "image": "boot.img"])
        #expect(unknownDevice.status == 404)
        #expect((unknownDevice.json["error"] as? String ?? "").contains("no fastboot device matches 'NOPE'"))
        #expect(unknownDevice.headers["content-type"]?.hasPrefix("application/json") == true)
        let noFarm = try await harness.http("GET", "/api/stations")
        #expect(noFarm.status == 200)
        #expect(noFarm.json["farm"] as? Bool == false)
        #expect((noFarm.json["stations"] as? [Any])?.isEmpty == true)

        var request = URLRequest(url: URL(string: harness.url + "/api/flash/start")!)
        request.httpMethod = "POST"
        request.httpBody = Data("{not json".utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        #expect((response as? HTTPURLResponse)?.statusCode == 400)
        #expect(String(decoding: data, as: UTF8.self).contains("\"error\""))

        let missing = try await harness.http("POST", "/api/flash/start", body: ["deviceId": "EMU1", "image": "nothere.img"])
        #expect(missing.status == 422)
        #expect((missing.json["error"] as? String ?? "").contains("no image 'nothere.img'"))
        #expect(try await harness.http("GET", "/api/jobs/job_12345678").status == 404)
        #expect(try await harness.http("GET", "/api/jobs/job_12345678/events").status == 404)
        #expect(try await harness.http("GET", "/api/nothing").status == 404)
        await harness.stop()
    }

    @Test func imagesOutsideTheImageDirectoryAreRefused() async throws {
        let harness = try await ServerHarness.start(devices: 1)
        defer { harness.removeFiles() }
        let outside = harness.base + "/secret.img"
        try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: outside))
        try FileManager.default.createSymbolicLink(atPath: harness.images + "/link.img", withDestinationPath: outside)
        // A hard link is the outside file itself under a name inside.
        #expect(link(outside, harness.images + "/hard.img") == 0)
        // One answer for all, whether or not the path exists outside: nothing can be probed.
        for name in ["../secret.img", outside, "link.img", "hard.img", "/etc/passwd", "/etc/nothing-here", "sub/../../secret.img", "missing.img"] {
            let answer = try await harness.http("POST", "/api/flash/start", body: ["deviceId": "EMU1", "image": name])
            #expect(answer.status == 422, "\(name) must be refused, got \(answer.status)")
            #expect(answer.json["error"] as? String == "no image '\(name)' in the image directory")
            #expect(answer.json["jobId"] == nil)
        }
        let listed = try await harness.http("GET", "/api/images")
        let names = (listed.json["images"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(!names.contains("link.img") && !names.contains("hard.img"))
        #expect((try await harness.http("GET", "/api/jobs").json["jobs"] as? [Any])?.isEmpty == true, "no job was started")
        await harness.stop()
    }

    @Test func aTokenIsRequiredWhenSetAndForeignOriginsAreRefused() async throws {
        let token = "s3cret-token-for-the-bench"
        let harness = try await ServerHarness.start(devices: 1, token: token, allowedOrigins: ["http://dashboard.lab:8080"])
        defer { harness.removeFiles() }
        let anonymous = try await harness.http("GET", "/api/jobs")
        #expect(anonymous.status == 401)
        #expect((anonymous.json["error"] as? String ?? "").contains("access token"))
        #expect(try await harness.http("GET", "/api/jobs", headers: ["Authorization": "Bearer wrong-token-xxxxxxxx"]).status == 401)
        #expect(try await harness.http("GET", "/api/jobs", headers: ["Authorization": "Bearer \(token)"]).status == 200)
        #expect(try await harness.http("GET", "/api/jobs?token=\(token)").status == 200)

        // A refused WebSocket is accepted and closed at once with 1008 and a reason a person can
        // read (a browser shows nothing of an HTTP refusal); nothing else is sent on it.
        let anonymousSocket = try await harness.refusedSocket()
        #expect(anonymousSocket.closeStatus == 1008)
        #expect(anonymousSocket.closeReason?.contains("token required") == true)
        #expect(anonymousSocket.messages.isEmpty)
        let wrongToken = try await harness.refusedSocket(query: "?token=wrong-token-xxxxxxxx")
        #expect(wrongToken.closeStatus == 1008)
        #expect(wrongToken.messages.isEmpty)
        let withQuery = try await harness.connect(query: "?token=\(token)")
        #expect(!withQuery.isClosed)
        let withHeader = try await harness.connect(headers: ["Authorization": "Bearer \(token)"])
        #expect(!withHeader.isClosed)

        // A page on another site cannot drive the flasher, even with the token.
        let evil = try await harness.http("POST", "/api/jobs/job_00000000/cancel", headers: ["Authorization": "Bearer \(token)", "Origin": "http://evil.example"])
        #expect(evil.status == 403)
        #expect((evil.json["error"] as? String ?? "").contains("http://evil.example"))
        let evilSocket = try await harness.refusedSocket(query: "?token=\(token)", headers: ["Origin": "http://evil.example"])
        #expect(evilSocket.closeStatus == 1008)
        #expect(evilSocket.closeReason?.contains("origin http://evil.example not allowed") == true)
        #expect(evilSocket.messages.isEmpty)
        let own = try await harness.connect(query: "?token=\(token)", headers: ["Origin": "http://127.0.0.1:\(harness.port)"])
        #expect(!own.isClosed)
        let allowed = try await harness.connect(query: "?token=\(token)", headers: ["Origin": "http://dashboard.lab:8080"])
        #expect(!allowed.isClosed)
        await harness.stop()
    }

    @Test func shutdownStopsRunningJobsAsServerStoppedAndClosesClientsWithACloseFrame() async throws {
        let harness = try await ServerHarness.start(devices: 1, speed: 2 << 20)
        defer { harness.removeFiles() }
        try harness.makeImage("boot.img", bytes: 16 << 20)
        var clients: [ProgressClient] = []
        for _ in 0..<50 { clients.append(try await harness.connect()) }
        let jobId = try await harness.startJob(device: "EMU1", image: "boot.img")
        for client in clients {
            try await client.wait(until: { $0.contains { $0["type"] as? String == "flash_progress" } })
        }
        await harness.stop()
        for client in clients {
            try await client.wait(timeout: 10, "the close frame", until: { _ in client.isClosed })
            #expect(client.closeStatus == 1001)
            let last = try #require(client.messages(job: jobId).last)
            #expect(last["type"] as? String == "flash_failed")
            #expect(last["reason"] as? String == "server_stopped")
        }
        let history = try HistoryStore(path: harness.base + "/history.sqlite")
        #expect(try history.entry(jobId: jobId)?.result == "interrupted")
    }

    @Test func aClientThatCannotKeepUpIsDisconnectedAndTheServerGoesOn() async throws {
        let harness = try await ServerHarness.start(devices: 1, speed: 1 << 20, queueLimit: 16)
        defer { harness.removeFiles() }
        try harness.makeImage("boot.img", bytes: 16 << 20)
        let flooder = try await harness.connect()
        let bystander = try await harness.connect()
        let jobId = try await harness.startJob(device: "EMU1", image: "boot.img")
        try await flooder.wait(until: { $0.contains { $0["type"] as? String == "flash_progress" } })
        // 400 commands at once produce lifecycle messages faster than its queue of 16 drains.
        for _ in 0..<200 {
            flooder.send(["type": "pause", "jobId": jobId])
            flooder.send(["type": "resume", "jobId": jobId])
        }
        try await flooder.wait(timeout: 20, "the disconnect", until: { _ in flooder.isClosed })
        #expect(harness.server.scheduler.broadcaster.overflowCount >= 1)
        try await Task.sleep(for: .milliseconds(200))
        let metrics = try await harness.http("GET", "/metrics").text
        #expect(metrics.contains("flashctl_slow_clients_disconnected_total"), "\(metrics)")
        #expect(!metrics.contains("flashctl_slow_clients_disconnected_total 0"))
        #expect(metrics.contains("flashctl_messages_dropped_total"))
        #expect(!metrics.contains("flashctl_messages_dropped_total 0"))
        // The job and everyone else go on.
        let late = try await harness.connect(query: "?jobId=\(jobId)")
        try await late.wait(until: { _ in !late.messages(job: jobId).isEmpty })
        #expect(late.messages(job: jobId).first?["type"] as? String == "flash_started")
        late.send(["type": "cancel", "jobId": jobId])
        try await late.waitForEnd(of: jobId)
        #expect(late.messages(job: jobId).last?["reason"] as? String == "cancelled")
        _ = bystander
        await harness.stop()
    }

    @Test func listeningBeyondLoopbackWithoutATokenIsRefusedAtStart() async throws {
        await #expect(throws: FlashError.self) { _ = try await ServerHarness.start(devices: 0, host: "0.0.0.0") }
    }

    @Test func theAPIReachesOnlyTCPDevicesItIsAllowedTo() async throws {
        let harness = try await ServerHarness.start(devices: 1)
        defer { harness.removeFiles() }
        try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: harness.images + "/boot.img"))
        // Refused before anything connects: the API cannot be used to probe ports.
        for selector in ["tcp:127.0.0.1:1", "tcp:192.0.2.1", "tcp:localhost:22"] {
            let answer = try await harness.http("POST", "/api/flash/start", body: ["deviceId": selector, "image": "boot.img"])
            #expect(answer.status == 403, "\(selector)")
            #expect((answer.json["error"] as? String ?? "").contains("is not a device this server may reach; start the server with --allow-tcp"), "\(answer.json)")
        }
        #expect((try await harness.http("GET", "/api/jobs").json["jobs"] as? [Any])?.isEmpty == true)
        // The server's own emulated devices are reachable by their address too.
        let emulated = try #require(harness.server.emulatedDevices.first)
        guard case .tcp(let host, let port) = emulated.address else { Issue.record("\(emulated)"); return }
        let started = try await harness.http("POST", "/api/flash/start", body: ["deviceId": "tcp:\(host):\(port)", "image": "boot.img", "partition": "boot"])
        #expect(started.status == 200, "\(started.json)")
        await harness.stop()
    }

    @Test func loopbackIsTheParsedAddressNotHowANameBegins() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"] {
            #expect(AccessPolicy.isLoopback(host), "\(host)")
        }
        for host in ["127.example.com", "127.0.0.1.nip.io", "0.0.0.0", "::", "192.168.1.20", "::ffff:127.0.0.1x", ""] {
            #expect(!AccessPolicy.isLoopback(host), "\(host)")
        }
        let named = ServerConfiguration(host: "127.example.com", port: 0, token: nil)
        #expect(throws: FlashError.self) { try named.validate() }
    }

    @Test func historyRecordsEveryJobAndSurvivesARestart() async throws {
        let first = try await ServerHarness.start(devices: 1, speed: 8 << 20)
        defer { first.removeFiles() }
        try first.makeImage("boot.img", bytes: 2 << 20)
        let jobId = try await first.startJob(device: "EMU1", image: "boot.img")
        try await first.waitForJob(jobId)
        let failing = try await first.http("POST", "/api/flash/start", body: ["deviceId": "EMU1", "image": "boot.img", "partition": "bad name!"])
        #expect(failing.status == 422)
        await first.stop()

        let second = try await ServerHarness.start(devices: 1, base: first.base)
        let history = try await second.http("GET", "/api/history")
        let entries = history.json["jobs"] as? [[String: Any]] ?? []
        let entry = try #require(entries.first { $0["jobId"] as? String == jobId })
        #expect(entry["result"] as? String == "completed")
        #expect(entry["deviceId"] as? String == "EMU1")
        #expect(entry["partition"] as? String == "boot")
        #expect(entry["bytesTransferred"] as? Int == 2 << 20)
        #expect((entry["durationMs"] as? Int ?? 0) > 0)
        #expect((entry["averageSpeed"] as? Int ?? 0) > 0)
        #expect(entry["xxh128"] as? String == (try xxh128sum(first.images + "/boot.img")))
        #expect(entry["sha256"] == nil, "SHA-256 is for disks, where it can be compared with a published checksum")
        await second.stop()
    }

    @Test func aJobRunningWhenTheServerDiedShowsAsInterrupted() async throws {
        let base = NSTemporaryDirectory() + "flashctl-server-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: base) }
        // What a killed server leaves behind: a row that says running.
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let store = try HistoryStore(path: base + "/history.sqlite")
        try store.record(JobStatus(
            info: JobInfo(jobId: "job_0badf00d", deviceId: "EMU1", image: "boot.img", partition: "boot"),
            state: .running, stage: "Sending boot", progress: 40, bytesTransferred: 100, totalBytes: 250,
            transferSpeed: 10, estimatedTimeRemaining: 15, error: nil, sha256: nil, bandwidthLimit: nil,
            createdAt: 1_000, startedAt: 1_000, endedAt: nil))
        let harness = try await ServerHarness.start(devices: 1, base: base)
        #expect(harness.server.interruptedJobs == 1)
        let entries = try await harness.http("GET", "/api/history").json["jobs"] as? [[String: Any]] ?? []
        #expect(entries.first?["result"] as? String == "interrupted")
        let error = entries.first?["error"] as? String ?? ""
        #expect(error.contains("server stopped"))
        await harness.stop()
    }

    @Test func metricsCountJobsBytesAndClients() async throws {
        let harness = try await ServerHarness.start(devices: 1)
        defer { harness.removeFiles() }
        try harness.makeImage("boot.img", bytes: 1 << 20)
        let client = try await harness.connect()
        let jobId = try await harness.startJob(device: "EMU1", image: "boot.img")
        try await client.waitForEnd(of: jobId)
        try await Task.sleep(for: .milliseconds(200))
        let metrics = try await harness.http("GET", "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.headers["content-type"]?.hasPrefix("text/plain") == true)
        let lines = metrics.text.split(separator: "\n").map(String.init)
        #expect(lines.contains(#"flashctl_jobs_finished_total{result="completed"} 1"#), "\(metrics.text)")
        #expect(lines.contains("flashctl_bytes_flashed_total \(1 << 20)"))
        #expect(lines.contains("flashctl_websocket_clients 1.0") || lines.contains("flashctl_websocket_clients 1"))
        #expect(lines.contains { $0.hasPrefix("flashctl_flash_speed_bytes_per_second_count") && $0.hasSuffix(" 1") })
        #expect(lines.contains { $0.hasPrefix(#"flashctl_jobs{state="running"}"#) })
        #expect(lines.contains { $0.hasPrefix("flashctl_progress_messages_coalesced_total") })
        await harness.stop()
    }
}

/// The digest xxhash's own tool computes, to hold ours against.
func xxh128sum(_ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/xxh128sum")
    process.arguments = [path]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(String(decoding: output, as: UTF8.self).prefix(32))
}
