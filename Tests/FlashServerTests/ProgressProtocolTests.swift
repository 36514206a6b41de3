import FlashEngine
@testable import FlashServer
import Foundation
import Testing

/// docs/PROTOCOL.md as a dashboard sees it, over a real WebSocket.
@Suite(.serialized) struct ProgressProtocolTests {
    static let lifecycleTypes: Set<String> = ["flash_started", "flash_paused", "flash_resumed", "flash_completed", "flash_failed"]

    @Test func aJobProducesStartedProgressAndCompletedWithConsistentFigures() async throws {
        let harness = try await ServerHarness.start(devices: 1, speed: 8 << 20)
        defer { harness.removeFiles() }
        let image = try harness.makeImage("boot.img", bytes: 6 << 20)
        let client = try await harness.connect()
        let jobId = try await harness.startJob(device: "EMU1", image: "boot.img")
        try await client.waitForEnd(of: jobId)
        #expect(harness.partition("EMU1", "boot") == image)
        await harness.stop()

        let messages = client.messages(job: jobId)
        let types = messages.map { $0["type"] as? String ?? "?" }
        #expect(types.first == "flash_started")
        #expect(types.last == "flash_completed")
        #expect(Set(types.dropFirst().dropLast()) == ["flash_progress"], "only progress between start and end: \(types)")
        #expect(types.count >= 4, "a 6 MiB flash at 8 MiB/s reports progress along the way: \(types)")
        for message in messages {
            #expect(message["deviceId"] as? String == "EMU1")
            #expect(message["timestamp"] is Int)
        }
        let started = messages[0]
        #expect(started["totalBytes"] as? Int == image.count)
        #expect(started["stage"] as? String != nil)

        let progress = messages.filter { $0["type"] as? String == "flash_progress" }
        let percents = progress.compactMap { ($0["progress"] as? NSNumber)?.doubleValue }
        let bytes = progress.compactMap { $0["bytesTransferred"] as? Int }
        #expect(percents == percents.sorted(), "progress never decreases: \(percents)")
        #expect(bytes == bytes.sorted())
        #expect(percents.last == 100)
        #expect(bytes.last == image.count)
        #expect(percents.dropLast().allSatisfy { $0 < 100 }, "100 only once the device has accepted everything")
        for message in progress {
            let total = try #require(message["totalBytes"] as? Int)
            let sent = try #require(message["bytesTransferred"] as? Int)
            #expect(sent <= total)
            #expect(message["transferSpeed"] is Int)
            #expect(message["estimatedTimeRemaining"] is Int)
            let percent = try #require((message["progress"] as? NSNumber)?.doubleValue)
            if percent < 100 { #expect(abs(percent - 100 * Double(sent) / Double(total)) <= 0.1) }
        }
        // At most 4 progress messages per second: consecutive ones are >= 250 ms apart, except the
        // final 100, which is never held back.
        let times = progress.compactMap { $0["timestamp"] as? Int }
        for (earlier, later) in zip(times.dropLast(2), times.dropLast().dropFirst()) {
            #expect(later - earlier >= 240, "progress at \(earlier) and \(later)")
        }
        let midway = progress.dropLast().filter { ($0["transferSpeed"] as? Int ?? 0) > 0 }
        #expect(!midway.isEmpty, "speed is reported while sending")
        let completed = try #require(messages.last)
        #expect(completed["totalBytes"] as? Int == image.count)
        #expect((completed["averageSpeed"] as? Int ?? 0) > 0)
    }

    @Test func aClientThatConnectsMidFlashIsCaughtUpAtOnce() async throws {
        let harness = try await ServerHarness.start(devices: 1, speed: 2 << 20)
        defer { harness.removeFiles() }
        try harness.makeImage("boot.img", bytes: 8 << 20)
        let jobId = try await harness.startJob(device: "EMU1", image: "boot.img")
        try await harness.waitForJob(jobId) { ($0["bytesTransferred"] as? Int ?? 0) > 0 && ($0["progress"] as? Double ?? 0) > 0 }
        try await Task.sleep(for: .milliseconds(300))
        let late = try await harness.connect()
        // The replay is queued before anything else; the pong, written at once, may pass it.
        try await late.wait(until: { _ in late.messages(job: jobId).count >= 2 })
        let replay = late.messages(job: jobId)
        #expect(replay.first?["type"] as? String == "flash_started")
        #expect(replay.dropFirst().first?["type"] as? String == "flash_progress")
        #expect(((replay.dropFirst().first?["progress"] as? NSNumber)?.doubleValue ?? 0) > 0)

        // Paused jobs replay as paused.
        _ = try await harness.http("POST", "/api/jobs/\(jobId)/pause")
        let another = try await harness.connect(query: "?jobId=\(jobId)")
        try await another.wait(until: { _ in another.messages(job: jobId).count >= 3 })
        #expect(another.messages(job: jobId).map { $0["type"] as? String ?? "" } == ["flash_started", "flash_progress", "flash_paused"])
        _ = try await harness.http("POST", "/api/jobs/\(jobId)/cancel")
        try await late.waitForEnd(of: jobId)
        await harness.stop()
    }

    @Test func theWsSpellingsOfThirdPartyDashboardsAreAliases() async throws {
        let harness = try await ServerHarness.start(devices: 2, speed: 4 << 20)
        defer { harness.removeFiles() }
        try harness.makeImage("boot.img", bytes: 4 << 20)
        let all = try await harness.connect(path: "/ws/flash-progress")
        let first = try await harness.startJob(device: "EMU1", image: "boot.img")
        let second = try await harness.startJob(device: "EMU2", image: "boot.img")
        let one = try await harness.connect(path: "/ws/flash-progress/\(first)")
        try await all.waitForEnd(of: first)
        try await all.waitForEnd(of: second)
        try await one.waitForEnd(of: first)
        #expect(all.messages(job: second).last?["type"] as? String == "flash_completed")
        // /ws/flash-progress/{jobId} is /flash-progress?jobId={jobId}: that job's messages only.
        let jobMessages = one.messages.filter { $0["jobId"] != nil }
        #expect(jobMessages.allSatisfy { $0["jobId"] as? String == first })
        #expect(jobMessages.first?["type"] as? String == "flash_started")
        #expect(jobMessages.last?["type"] as? String == "flash_completed")
        await harness.stop()
    }

    @Test func pauseResumeAndCancelOverTheWebSocket() async throws {
        let harness = try await ServerHarness.start(devices: 1, speed: 2 << 20)
        defer { harness.removeFiles() }
        try harness.makeImage("boot.img", bytes: 16 << 20)
        let driver = try await harness.connect()
        let watcher = try await harness.connect()
        let jobId = try await harness.startJob(device: "EMU1", image: "boot.img")
        try await driver.wait(until: { $0.contains { $0["type"] as? String == "flash_progress" && $0["jobId"] as? String == jobId } })

        driver.send(["type": "pause", "jobId": jobId])
        try await watcher.wait(until: { $0.contains { $0["type"] as? String == "flash_paused" } })
        #expect(try await harness.job(jobId)["state"] as? String == "paused")
        driver.send(["type": "pause", "jobId": jobId])
        try await driver.wait(until: { $0.contains { $0["type"] as? String == "error" } })
        #expect(watcher.messages(ofType: "error").isEmpty, "an error goes to the client that sent the command only")

        driver.send(["type": "resume", "jobId": jobId])
        try await watcher.wait(until: { $0.contains { $0["type"] as? String == "flash_resumed" } })
        #expect(try await harness.job(jobId)["state"] as? String == "running")

        driver.send(["type": "cancel", "jobId": jobId])
        try await watcher.waitForEnd(of: jobId)
        let last = try #require(watcher.messages(job: jobId).last)
        #expect(last["type"] as? String == "flash_failed")
        #expect(last["reason"] as? String == "cancelled")
        #expect((last["error"] as? String ?? "").lowercased().contains("cancel"))
        #expect(try await harness.job(jobId)["state"] as? String == "cancelled")
        await harness.stop()
    }

    @Test func pauseResumeAndCancelOverHTTP() async throws {
        let harness = try await ServerHarness.start(devices: 1, speed: 2 << 20)
        defer { harness.removeFiles() }
        try harness.makeImage("boot.img", bytes: 16 << 20)
        let watcher = try await harness.connect()
        let jobId = try await harness.startJob(device: "EMU1", image: "boot.img")
        try await harness.waitForJob(jobId) { ($0["bytesTransferred"] as? Int ?? 0) > 0 }

        let paused = try await harness.http("POST", "/api/jobs/\(jobId)/pause")
        #expect(paused.status == 200)
        #expect(paused.json["status"] as? String == "paused")
        try await watcher.wait(until: { $0.contains { $0["type"] as? String == "flash_paused" } })
        let again = try await harness.http("POST", "/api/jobs/\(jobId)/pause")
        #expect(again.status == 409)
        #expect((again.json["error"] as? String ?? "").contains("only a running job can be paused"))

        #expect(try await harness.http("POST", "/api/jobs/\(jobId)/resume").json["status"] as? String == "running")
        try await watcher.wait(until: { $0.contains { $0["type"] as? String == "flash_resumed" } })
        let cancel = try await harness.http("POST", "/api/jobs/\(jobId)/cancel")
        #expect(cancel.status == 200)
        try await watcher.waitForEnd(of: jobId)
        #expect(watcher.messages(job: jobId).last?["reason"] as? String == "cancelled")
        let finished = try await harness.http("POST", "/api/jobs/\(jobId)/cancel")
        #expect(finished.status == 409)
        let unknown = try await harness.http("POST", "/api/jobs/job_00000000/resume")
        #expect(unknown.status == 404)
        #expect(unknown.json["error"] as? String == "no job 'job_00000000'")
        await harness.stop()
    }

    @Test func fourDevicesFlashInParallelAndEveryByteArrives() async throws {
        let harness = try await ServerHarness.start(devices: 4, speed: 8 << 20)
        defer { harness.removeFiles() }
        let image = try harness.makeImage("system.img", bytes: 4 << 20)
        let client = try await harness.connect()
        var jobs: [String] = []
        for serial in ["EMU1", "EMU2", "EMU3", "EMU4"] {
            jobs.append(try await harness.startJob(device: serial, image: "system.img"))
        }
        for job in jobs { try await client.waitForEnd(of: job) }
        var intervals: [(Int, Int)] = []
        for job in jobs {
            let status = try await harness.job(job)
            #expect(status["state"] as? String == "completed")
            intervals.append((try #require(status["startedAt"] as? Int), try #require(status["endedAt"] as? Int)))
        }
        // Each job started before every other one ended: they ran at the same time.
        for (start, _) in intervals {
            #expect(intervals.allSatisfy { start < $0.1 })
        }
        for serial in ["EMU1", "EMU2", "EMU3", "EMU4"] {
            #expect(harness.partition(serial, "system") == image)
        }
        await harness.stop()
    }

    @Test func aPerJobBandwidthCapIsRespected() async throws {
        let harness = try await ServerHarness.start(devices: 1)
        defer { harness.removeFiles() }
        try harness.makeImage("boot.img", bytes: 3 << 20)
        let jobId = try await harness.startJob(device: "EMU1", image: "boot.img", bandwidthLimit: 1 << 20)
        let done = try await harness.waitForJob(jobId)
        #expect(done["state"] as? String == "completed")
        #expect(done["bandwidthLimit"] as? Int == 1 << 20)
        let duration = try #require(done["durationMs"] as? Int)
        #expect(duration >= 2700, "3 MiB at 1 MiB/s takes at least 2.75 s, took \(duration) ms")
        let average = try #require(done["averageSpeed"] as? Int)
        #expect(average <= (1 << 20) * 115 / 100)
        await harness.stop()
    }

    @Test func aStalledClientDoesNotHoldUpTheFlashOrOtherClients() async throws {
        let harness = try await ServerHarness.start(devices: 1, speed: 16 << 20)
        defer { harness.removeFiles() }
        let image = try harness.makeImage("boot.img", bytes: 8 << 20)
        let stalled = try StalledWebSocket(port: harness.port)
        defer { stalled.close() }
        let client = try await harness.connect()
        let jobId = try await harness.startJob(device: "EMU1", image: "boot.img")
        try await client.waitForEnd(of: jobId, timeout: 20)
        #expect(client.messages(job: jobId).last?["type"] as? String == "flash_completed")
        #expect(harness.partition("EMU1", "boot") == image)
        await harness.stop()
    }
}

/// A client that completes the WebSocket handshake and then never reads a byte.
final class StalledWebSocket {
    let fd: Int32

    /// `receiveBuffer` shrinks the socket's receive buffer (set before connecting, so the window
    /// the server sees stays small).
    init(port: Int, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw FlashError(.io, "connect failed") }
        let request = "GET /flash-progress HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        _ = Array(request.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var answer = [UInt8](repeating: 0, count: 12)
        let got = answer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 12, Int32(MSG_WAITALL)) }
        guard got == 12, String(decoding: answer, as: UTF8.self) == "HTTP/1.1 101" else {
            Glibc.close(fd)
            throw FlashError(.protocolViolation, "no upgrade: \(String(decoding: answer, as: UTF8.self))")
        }
    }

    /// Reads everything the server managed to send; true if the server then closed the connection.
    func isClosedByServer(timeoutMs: Int32 = 5000) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, timeoutMs) == 1 else { return false }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return true }
        }
    }

    func close() { Glibc.close(fd) }
}
