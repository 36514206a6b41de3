import FlashEngine
import FlashServer
import Foundation
import XCTest

/// `flashctl serve` and the commands that talk to it, as separate processes, as users run them.
final class ServeCommandTests: XCTestCase {
    private var servers: [ServeProcess] = []

    override func tearDown() {
        servers.forEach { $0.removeFiles() }
        servers = []
    }

    private func serve(base: String? = nil, _ arguments: [String] = ["--emulate", "2"]) throws -> ServeProcess {
        let server = try ServeProcess(base: base, arguments: arguments)
        servers.append(server)
        return server
    }

    private func flashctl(_ arguments: [String], timeout: Double = 60) throws -> CommandResult {
        try ProcessRunner.run(ProcessRunner.flashctl, arguments, timeout: timeout)
    }

    private func curl(_ arguments: [String], timeout: Double = 30) throws -> CommandResult {
        try ProcessRunner.run("/usr/bin/curl", ["-sS"] + arguments, timeout: timeout)
    }

    func testFlashThroughTheServerFromTheCLIAndFollowWithCurl() throws {
        let server = try serve(["--emulate", "2", "--emulate-speed", "8M"])
        XCTAssertTrue(server.banner.contains("emulated device EMU1 on tcp:127.0.0.1:"), server.banner)
        let image = TestImages.random(3 << 20)
        try server.write(image: "boot.img", image)

        let flash = try flashctl(["flash", "--server", server.url, "--device", "EMU1", "boot.img", "--json"])
        XCTAssertEqual(flash.status, 0, flash.stderr)
        let types = flash.events.compactMap { $0["type"] as? String }
        XCTAssertEqual(types.first, "flash_started")
        XCTAssertEqual(types.last, "flash_completed")
        XCTAssertEqual(flash.events(ofType: "flash_progress").last?["progress"] as? Int, 100)
        let jobId = try XCTUnwrap(flash.events.first?["jobId"] as? String)

        // A finished job's events: how it ended, then the stream closes.
        let finished = try curl(["-N", "\(server.url)/api/jobs/\(jobId)/events"])
        XCTAssertEqual(finished.status, 0)
        XCTAssertEqual(finished.events.compactMap { $0["type"] as? String }, ["flash_started", "flash_progress", "flash_completed"])

        // A running job's events stream until it ends.
        let start = try curl(["-X", "POST", "-H", "Content-Type: application/json", "-d", #"{"deviceId":"EMU2","image":"boot.img","partition":"recovery"}"#, "\(server.url)/api/flash/start"])
        let second = try XCTUnwrap(start.events.first?["jobId"] as? String, start.stdout)
        XCTAssertEqual(start.events.first?["status"] as? String, "started")
        let live = try curl(["-N", "\(server.url)/api/jobs/\(second)/events"])
        XCTAssertEqual(live.events.first?["type"] as? String, "flash_started")
        XCTAssertEqual(live.events.last?["type"] as? String, "flash_completed")
        XCTAssertGreaterThan(live.events(ofType: "flash_progress").count, 1)

        let jobs = try flashctl(["jobs", "--server", server.url])
        XCTAssertEqual(jobs.status, 0, jobs.stderr)
        XCTAssertTrue(jobs.stdout.contains(jobId) && jobs.stdout.contains(second), jobs.stdout)
        XCTAssertEqual(jobs.stdout.components(separatedBy: "completed").count - 1, 2, jobs.stdout)

        let history = try flashctl(["history", "--history", server.history, "--json"])
        XCTAssertEqual(history.status, 0, history.stderr)
        let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(Set(entries.compactMap { $0["jobId"] as? String }), [jobId, second])
        XCTAssertEqual(entries.first { $0["jobId"] as? String == second }?["partition"] as? String, "recovery")
        let table = try flashctl(["history", "--server", server.url])
        XCTAssertTrue(table.stdout.contains("recovery") && table.stdout.contains("completed"), table.stdout)
    }

    func testPauseResumeAndCancelCommands() throws {
        let server = try serve(["--emulate", "1", "--emulate-speed", "2M"])
        try server.write(image: "boot.img", TestImages.random(16 << 20))
        let start = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU1","image":"boot.img"}"#, "\(server.url)/api/flash/start"])
        let jobId = try XCTUnwrap(start.events.first?["jobId"] as? String, start.stdout)

        let pause = try flashctl(["pause", "--server", server.url, jobId])
        XCTAssertEqual(pause.status, 0, pause.stderr)
        XCTAssertEqual(pause.stdout, "\(jobId): paused\n")
        let again = try flashctl(["pause", "--server", server.url, jobId])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("only a running job can be paused"), again.stderr)
        XCTAssertEqual(try flashctl(["resume", "--server", server.url, jobId]).stdout, "\(jobId): running\n")
        let cancel = try flashctl(["cancel", "--server", server.url, jobId])
        XCTAssertEqual(cancel.status, 0, cancel.stderr)
        let ended = try curl(["-N", "\(server.url)/api/jobs/\(jobId)/events"])
        XCTAssertEqual(ended.events.last?["reason"] as? String, "cancelled")
        let unknown = try flashctl(["cancel", "--server", server.url, "job_00000000"])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.stderr.contains("no job 'job_00000000'"), unknown.stderr)
        let nobody = try flashctl(["jobs", "--server", "http://127.0.0.1:1"])
        XCTAssertNotEqual(nobody.status, 0)
        XCTAssertTrue(nobody.stderr.contains("cannot reach the flashctl server"), nobody.stderr)
    }

    func testCtrlCOnARemoteFlashCancelsTheJobOnTheServer() throws {
        let server = try serve(["--emulate", "1", "--emulate-speed", "2M"])
        try server.write(image: "boot.img", TestImages.random(16 << 20))
        let flash = try RunningCommand(ProcessRunner.flashctl, ["flash", "--server", server.url, "--device", "EMU1", "boot.img", "--json"])
        XCTAssertTrue(flash.waitFor("\"bytesTransferred\":"), flash.output)
        flash.signal(SIGINT)
        XCTAssertEqual(flash.wait(timeout: 20), 130)
        let last = try XCTUnwrap(flash.events.last)
        XCTAssertEqual(last["type"] as? String, "flash_failed")
        XCTAssertEqual(last["reason"] as? String, "cancelled")
        XCTAssertTrue(flash.output.contains("flashctl: cancelled before anything was written to boot on EMU1"), flash.output)
    }

    func testSIGTERMStopsRunningJobsAsServerStoppedRecordsThemAndEndsClientStreams() throws {
        let server = try serve(["--emulate", "1", "--emulate-speed", "2M"])
        try server.write(image: "boot.img", TestImages.random(16 << 20))
        let start = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU1","image":"boot.img"}"#, "\(server.url)/api/flash/start"])
        let jobId = try XCTUnwrap(start.events.first?["jobId"] as? String, start.stdout)
        let follower = try RunningCommand("/usr/bin/curl", ["-sN", "\(server.url)/api/jobs/\(jobId)/events"])
        XCTAssertTrue(follower.waitFor("flash_progress"), follower.output)

        let partitions = try XCTUnwrap(server.banner.range(of: #"partitions in \S+"#, options: .regularExpression).map { String(server.banner[$0].dropFirst("partitions in ".count)) })
        XCTAssertTrue(FileManager.default.fileExists(atPath: partitions), partitions)
        XCTAssertEqual(server.stop(signal: SIGTERM, timeout: 15), 0, "the server exits cleanly")
        XCTAssertFalse(FileManager.default.fileExists(atPath: (partitions as NSString).deletingLastPathComponent), "emulated partitions are removed on exit")
        XCTAssertEqual(follower.wait(timeout: 10), 0, "the stream ends with the server")
        XCTAssertEqual(follower.events.last?["type"] as? String, "flash_failed")
        XCTAssertEqual(follower.events.last?["reason"] as? String, "server_stopped", "a dashboard must not show a person's cancel")
        XCTAssertEqual(follower.events.last?["error"] as? String, "The server stopped before this flash finished")

        let history = try flashctl(["history", "--history", server.history, "--json"])
        let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]], history.stdout + history.stderr)
        XCTAssertEqual(entries.first?["jobId"] as? String, jobId)
        XCTAssertEqual(entries.first?["result"] as? String, "interrupted")
    }

    func testAJobRunningWhenTheServerIsKilledIsInterruptedAfterRestart() throws {
        let server = try serve(["--emulate", "1", "--emulate-speed", "2M"])
        try server.write(image: "boot.img", TestImages.random(16 << 20))
        let start = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU1","image":"boot.img"}"#, "\(server.url)/api/flash/start"])
        let jobId = try XCTUnwrap(start.events.first?["jobId"] as? String, start.stdout)
        usleep(500_000)
        _ = server.stop(signal: SIGKILL)

        let again = try serve(base: server.base, ["--emulate", "1"])
        XCTAssertTrue(again.banner.contains("1 job(s) left unfinished by the last run are marked interrupted"), again.banner)
        let history = try flashctl(["history", "--server", again.url, "--json"])
        let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]], history.stdout + history.stderr)
        XCTAssertEqual(entries.first?["jobId"] as? String, jobId)
        XCTAssertEqual(entries.first?["result"] as? String, "interrupted")
    }

    func testTheThreadsServingDashboardsRunAtTheAskedNicenessAndFlashThreadsDoNot() throws {
        let server = try serve(["--emulate", "1", "--io-nice", "-7"])
        let threads = try Self.threadNiceness(pid: server.pid)
        let eventLoops = threads.filter { $0.name.hasPrefix("NIO-ELT-") }
        XCTAssertFalse(eventLoops.isEmpty, "\(threads)")
        XCTAssertEqual(threads.first { $0.tid == server.pid }?.nice, 0, "the main thread keeps its niceness")
        if geteuid() == 0 {
            XCTAssertTrue(server.banner.contains("dashboard and API threads at niceness -7"), server.banner)
            XCTAssertEqual(Set(eventLoops.map(\.nice)), [-7], "\(eventLoops)")
        } else {
            XCTAssertTrue(server.banner.contains("dashboard and API threads at normal priority"), server.banner)
            XCTAssertEqual(Set(eventLoops.map(\.nice)), [0], "\(eventLoops)")
        }
        XCTAssertNotEqual(try flashctl(["serve", "--port", "0", "--io-nice", "-21"], timeout: 20).status, 0)
    }

    func testTheServerServesDashboardsOnTheThreadsItIsGiven() throws {
        XCTAssertEqual([1, 2, 3, 8].map { ServerConfiguration.defaultIOThreads(cores: $0) }, [1, 1, 1, 4], "half the cores, at least one")
        // The server counts cores as this process does (NIO's count, which honours cgroup limits).
        let expected = ServerConfiguration.defaultIOThreads()
        let byDefault = try serve(["--emulate", "1"])
        let defaultLoops = try Self.threadNiceness(pid: byDefault.pid).filter { $0.name.hasPrefix("NIO-ELT-") }
        XCTAssertEqual(defaultLoops.count, expected, "\(defaultLoops)")
        XCTAssertTrue(byDefault.banner.contains("dashboards and API served by \(expected) thread"), byDefault.banner)

        let three = try serve(["--emulate", "1", "--io-threads", "3"])
        XCTAssertTrue(three.banner.contains("dashboards and API served by 3 threads (--io-threads)"), three.banner)
        try three.write(image: "boot.img", TestImages.random(1 << 20))
        let flash = try flashctl(["flash", "--server", three.url, "--device", "EMU1", "boot.img", "--json"], timeout: 60)
        XCTAssertEqual(flash.status, 0, flash.stdout + flash.stderr)
        XCTAssertEqual(flash.events.last?["type"] as? String, "flash_completed", flash.stdout)
        // Having served the API and a WebSocket, the server has its 3 loops and never started NIO's
        // shared ones (one per core, named NIO-SGLTN-), which it would have used otherwise.
        let threads = try Self.threadNiceness(pid: three.pid)
        XCTAssertEqual(threads.filter { $0.name.hasPrefix("NIO-ELT-") }.count, 3, "\(threads)")
        XCTAssertFalse(threads.contains { $0.name.hasPrefix("NIO-SGLTN-") }, "\(threads)")

        let refused = try flashctl(["serve", "--port", "0", "--io-threads", "0"], timeout: 20)
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("--io-threads must be between 1 and 256"), refused.stderr)
    }

    /// Name and niceness of each thread of `pid`, from /proc.
    private static func threadNiceness(pid: Int32) throws -> [(tid: Int32, name: String, nice: Int)] {
        let tasks = "/proc/\(pid)/task"
        return try FileManager.default.contentsOfDirectory(atPath: tasks).compactMap { tid in
            let name = try String(contentsOfFile: "\(tasks)/\(tid)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let stat = try String(contentsOfFile: "\(tasks)/\(tid)/stat", encoding: .utf8)
            // Fields after the name's closing parenthesis start with the state (field 3); nice is field 19.
            guard let close = stat.lastIndex(of: ")") else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 16, let nice = Int(fields[16]), let id = Int32(tid) else { return nil }
            return (id, name, nice)
        }
    }

    func testAJobKilledWithTheServerIsRecordedWithItsLastStateAndBytes() throws {
        let server = try serve(["--emulate", "1", "--emulate-speed", "2M"])
        try server.write(image: "boot.img", TestImages.random(16 << 20))
        let start = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU1","image":"boot.img"}"#, "\(server.url)/api/flash/start"])
        let jobId = try XCTUnwrap(start.events.first?["jobId"] as? String, start.stdout)
        let deadline = Date().addingTimeInterval(20)
        var sent = 0
        while sent < 2 << 20, Date() < deadline {
            usleep(100_000)
            sent = try curl(["\(server.url)/api/jobs/\(jobId)"]).events.first?["bytesTransferred"] as? Int ?? 0
        }
        XCTAssertGreaterThanOrEqual(sent, 2 << 20)
        // Running: a checkpoint a second keeps the row's bytes current.
        usleep(1_200_000)
        let running = try historyRow(jobId, server)
        XCTAssertEqual(running?["result"] as? String, "running")
        XCTAssertGreaterThanOrEqual(running?["bytesTransferred"] as? Int ?? 0, 2 << 20, "\(String(describing: running))")
        XCTAssertEqual(try curl(["-X", "POST", "\(server.url)/api/jobs/\(jobId)/pause"]).status, 0)
        usleep(300_000)
        _ = server.stop(signal: SIGKILL, timeout: 5)
        let paused = try historyRow(jobId, server)
        XCTAssertEqual(paused?["result"] as? String, "paused", "\(String(describing: paused))")
        let pausedBytes = paused?["bytesTransferred"] as? Int ?? 0
        XCTAssertGreaterThanOrEqual(pausedBytes, 2 << 20)

        // The next server marks it interrupted and keeps how far it got.
        let next = try serve(base: server.base, ["--emulate", "1"])
        let row = try XCTUnwrap(try curl(["\(next.url)/api/history"]).events.first?["jobs"] as? [[String: Any]]).first { $0["jobId"] as? String == jobId }
        XCTAssertEqual(row?["result"] as? String, "interrupted")
        XCTAssertEqual(row?["error"] as? String, "the server stopped while this job was paused")
        XCTAssertEqual(row?["bytesTransferred"] as? Int, pausedBytes)
    }

    private func historyRow(_ jobId: String, _ server: ServeProcess) throws -> [String: Any]? {
        let history = try flashctl(["history", "--history", server.history, "--json"])
        let entries = try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]]
        return entries?.first { $0["jobId"] as? String == jobId }
    }

    func testConnectionsWithNoRequestInProgressAreClosedWhileDashboardsStay() throws {
        let server = try serve(["--emulate", "1", "--idle-timeout", "1"])
        try server.write(image: "boot.img", TestImages.random(1 << 20))
        let port = try XCTUnwrap(UInt16(server.url.split(separator: ":").last ?? ""))
        let dashboard = try DashboardSocket(serverURL: server.url)
        // A request whose head never completes, and a keep-alive connection after its answer.
        let halfSent = try POSIXSocket.connect(host: "127.0.0.1", port: port, timeoutMs: 2000)
        try halfSent.writeAll(Array("GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n".utf8), timeoutMs: 2000)
        let idle = try POSIXSocket.connect(host: "127.0.0.1", port: port, timeoutMs: 2000)
        try idle.writeAll(Array("GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8), timeoutMs: 2000)
        var buffer = [UInt8](repeating: 0, count: 65536)
        let answered = try buffer.withUnsafeMutableBytes { try idle.read(into: $0, timeoutMs: 5000) }
        XCTAssertTrue(String(decoding: buffer.prefix(answered), as: UTF8.self).hasPrefix("HTTP/1.1 200"))
        for (name, socket) in [("half-sent request", halfSent), ("idle keep-alive", idle)] {
            XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { _ = try socket.read(into: $0, timeoutMs: 10_000) }, name) { error in
                XCTAssertEqual((error as? FlashError)?.kind, .disconnected, "\(name): \(error)")
            }
            socket.close()
        }
        // The dashboard's WebSocket outlived the idle timeout: it still hears of a new job.
        usleep(1_500_000)
        let start = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU1","image":"boot.img"}"#, "\(server.url)/api/flash/start"])
        XCTAssertNotNil(start.events.first?["jobId"] as? String, start.stdout)
        XCTAssertEqual(dashboard.end(of: "EMU1")?["type"] as? String, "flash_completed")
    }

    func testARuntimeDirectoryPlantedByAnotherUserIsRefusedAndAKilledServersFilesAreRemoved() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-runtime-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let runtime = base + "/tmp/flashctl-\(geteuid())"
        try FileManager.default.createDirectory(atPath: runtime, withIntermediateDirectories: true)
        XCTAssertEqual(chown(runtime, 65534, 65534), 0, "the test changes an owner: it runs as root, as CI does")
        let refused = try ProcessRunner.run("/usr/bin/env", [
            "-u", "XDG_RUNTIME_DIR", "TMPDIR=\(base)/tmp", ProcessRunner.flashctl, "serve", "--port", "0", "--emulate", "1",
            "--images", base + "/images", "--history", base + "/history.sqlite",
        ], timeout: 20)
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("\(runtime) belongs to another user (uid 65534): flashctl will not use it"), refused.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: runtime), [], "nothing was put into it")

        // A killed server's partitions (its PID gone) are removed by the next one.
        XCTAssertEqual(chown(runtime, geteuid(), getegid()), 0)
        XCTAssertEqual(chmod(runtime, 0o700), 0)
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let stale = runtime + "/serve-\(gone.processIdentifier)-1/EMU1"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: true)
        try Data(count: 4096).write(to: URL(fileURLWithPath: stale + "/boot.img"))
        let server = try serve(base: base, ["--emulate", "1"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: runtime + "/serve-\(gone.processIdentifier)-1"), "stale emulator folders are removed at start")
        let own = try FileManager.default.contentsOfDirectory(atPath: runtime)
        XCTAssertEqual(own, ["serve-\(server.pid)-1"])
    }

    func testOnePeerCannotHoldMoreConnectionsThanItsCapAndOthersAreStillServed() throws {
        let server = try serve(["--emulate", "1", "--max-connections-per-peer", "8"])
        let port = try XCTUnwrap(UInt16(server.url.split(separator: ":").last ?? ""))
        var held: [POSIXSocket] = []
        defer { held.forEach { $0.close() } }
        for _ in 0..<8 { held.append(try POSIXSocket.connect(host: "127.0.0.1", port: port, timeoutMs: 2000)) }
        usleep(200_000)
        // The ninth from the same address is closed at once, before it can send anything.
        let ninth = try POSIXSocket.connect(host: "127.0.0.1", port: port, timeoutMs: 2000)
        defer { ninth.close() }
        var buffer = [UInt8](repeating: 0, count: 1024)
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { _ = try ninth.read(into: $0, timeoutMs: 5000) }) { error in
            XCTAssertEqual((error as? FlashError)?.kind, .disconnected, "\(error)")
        }
        // Another address is served meanwhile.
        let other = try curl(["--interface", "127.0.0.2", "-w", "%{http_code}", "-o", "/dev/null", "\(server.url)/api/jobs"])
        XCTAssertEqual(other.stdout, "200", other.stderr)
        // Once the held connections go, the address is served again.
        held.forEach { $0.close() }
        held = []
        usleep(300_000)
        let again = try curl(["-w", "%{http_code}", "-o", "/dev/null", "\(server.url)/api/jobs"])
        XCTAssertEqual(again.stdout, "200", again.stderr)
    }

    /// The campaign's lock-out: one peer opens 20,000 connections (as many as this process may
    /// hold) and sends nothing. The server holds at most its per-peer cap of them, and another
    /// address is answered all along.
    func testTwentyThousandIdleConnectionsFromOnePeerDoNotLockOthersOut() throws {
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        let count = min(20_000, Int(limit.rlim_cur) - 300)
        let server = try serve(["--emulate", "1"])
        let port = try XCTUnwrap(UInt16(server.url.split(separator: ":").last ?? ""))
        // Bare descriptors: POSIXSocket keeps a wake pipe beside each connection.
        var idle: [Int32] = []
        idle.reserveCapacity(count)
        defer { idle.forEach { _ = Glibc.close($0) } }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            let connected = fd >= 0 && withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            } == 0
            guard connected else {
                if fd >= 0 { _ = Glibc.close(fd) }
                return XCTFail("connection \(idle.count + 1) of \(count): \(String(cString: strerror(errno)))")
            }
            idle.append(fd)
        }
        for attempt in 0..<20 {
            let answer = try curl(["--interface", "127.0.0.2", "--max-time", "5", "-w", "%{http_code}", "-o", "/dev/null", "\(server.url)/api/jobs"])
            XCTAssertEqual(answer.stdout, "200", "request \(attempt) with \(count) idle connections open: \(answer.stderr)")
        }
        let held = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.pid)/fd").count
        XCTAssertLessThan(held, 1_024 + 200, "the server holds \(held) descriptors while \(count) connections knock")
        print("ServeCommandTests: \(count) idle connections from one peer; the server held \(held) descriptors")
    }

    func testServeRefusesAnOpenAddressWithoutAToken() throws {
        // A name that begins like a loopback address is not one: it resolves wherever DNS says.
        for host in ["0.0.0.0", "127.example.com"] {
            let result = try flashctl(["serve", "--host", host, "--port", "0"], timeout: 20)
            XCTAssertNotEqual(result.status, 0, host)
            XCTAssertTrue(result.stderr.contains("listening on \(host) (not loopback) requires an access token"), result.stderr)
        }
    }

    func testATokenOnTheCommandLineIsWarnedAboutAndOneFromTheEnvironmentIsUsed() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-token-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let visible = try RunningCommand(ProcessRunner.flashctl, [
            "serve", "--port", "0", "--images", base + "/images", "--history", base + "/history.sqlite", "--token", "a-token-of-16-chars-or-more",
        ])
        XCTAssertTrue(visible.waitFor("listening on"), visible.output)
        XCTAssertTrue(visible.output.contains("warning: a token given with --token shows in 'ps'"), visible.output)
        visible.signal(SIGTERM)
        XCTAssertNotNil(visible.wait(timeout: 15))
        // FLASHCTL_TOKEN is a token like --token's: an open address then starts.
        setenv("FLASHCTL_TOKEN", "another-token-of-16-chars", 1)
        defer { unsetenv("FLASHCTL_TOKEN") }
        let hidden = try RunningCommand(ProcessRunner.flashctl, [
            "serve", "--host", "0.0.0.0", "--port", "0", "--images", base + "/images", "--history", base + "/history.sqlite",
        ])
        XCTAssertTrue(hidden.waitFor("listening on"), hidden.output)
        XCTAssertFalse(hidden.output.contains("warning: a token"), hidden.output)
        hidden.signal(SIGTERM)
        _ = hidden.wait(timeout: 15)
    }
}
