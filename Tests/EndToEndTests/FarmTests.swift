import Foundation
import XCTest

/// Stations of a farm (`serve --farm`) as separate processes sharing one real PostgreSQL.
final class FarmTests: XCTestCase {
    private var database: PostgresServer!
    private var servers: [ServeProcess] = []

    override func setUpWithError() throws {
        database = try PostgresServer()
    }

    override func tearDown() {
        servers.forEach { _ = $0.stop(signal: SIGKILL, timeout: 5); $0.removeFiles() }
        servers = []
        database = nil
    }

    private func station(_ name: String, _ extra: [String] = ["--emulate", "1"]) throws -> ServeProcess {
        let server = try ServeProcess(arguments: ["--farm", database.url, "--station", name] + extra)
        servers.append(server)
        return server
    }

    private func stations(at server: ServeProcess) throws -> [String: [String: Any]] {
        let result = try ProcessRunner.run("/usr/bin/curl", ["-sS", "\(server.url)/api/stations"], timeout: 30)
        let body = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], result.stdout + result.stderr)
        let list = try XCTUnwrap(body["stations"] as? [[String: Any]], result.stdout)
        return Dictionary(uniqueKeysWithValues: list.map { ($0["station"] as? String ?? "", $0) })
    }

    private func waitForStations(at server: ServeProcess, timeout: Double, _ condition: ([String: [String: Any]]) -> Bool) throws -> [String: [String: Any]] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: [String: Any]] = [:]
        while Date() < deadline {
            last = try stations(at: server)
            if condition(last) { return last }
            usleep(200_000)
        }
        XCTFail("the stations never reached the expected state: \(last)")
        return last
    }

    /// Three stations started together on an empty database (the schema is made once, under a
    /// lock) see each other with their devices; one killed outright is declared lost within 12 s,
    /// with its devices offline; one stopped cleanly is shown stopped.
    func testStationsSeeEachOtherAndASilentOneIsDeclaredLost() throws {
        let starts = ConcurrentStarts()
        let url = database.url
        DispatchQueue.concurrentPerform(iterations: 3) { index in
            starts.record(index, Result { try ServeProcess(arguments: ["--farm", url, "--station", ["a", "b", "c"][index], "--emulate", "\(index + 1)"]) })
        }
        let started = try starts.servers(3)
        servers += started
        let (a, b, c) = (started[0], started[1], started[2])
        // Migrated once, completely, though three stations raced for it.
        XCTAssertEqual(try database.sql("SELECT count(*) FROM flashctl_schema"), "1\n")
        XCTAssertEqual(try database.sql("SELECT to_regclass('station') IS NOT NULL AND to_regclass('farm_job') IS NOT NULL"), "t\n")

        let listed = try waitForStations(at: b, timeout: 10) { stations in
            stations.count == 3 && stations.values.allSatisfy { ($0["devices"] as? [[String: Any]])?.isEmpty == false }
        }
        for (name, server, emulated) in [("a", a, 1), ("b", b, 2), ("c", c, 3)] {
            let entry = try XCTUnwrap(listed[name])
            XCTAssertEqual(entry["state"] as? String, "online", "\(entry)")
            XCTAssertEqual(entry["address"] as? String, server.url)
            let devices = (entry["devices"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == "fastboot-tcp" }
            XCTAssertEqual(devices.compactMap { $0["deviceId"] as? String }.sorted(), (1...emulated).map { "EMU\($0)" }, "\(entry)")
            XCTAssertEqual(entry["runningJobs"] as? Int, 0)
        }

        XCTAssertNotNil(c.stop(signal: SIGKILL, timeout: 5))
        let killed = Date()
        let afterLoss = try waitForStations(at: a, timeout: 15) { $0["c"]?["state"] as? String == "lost" }
        let seconds = Date().timeIntervalSince(killed)
        XCTAssertLessThan(seconds, 12, "a silent station must be declared lost within 12 s")
        let offline = (afterLoss["c"]?["devices"] as? [[String: Any]] ?? []).compactMap { $0["state"] as? String }
        XCTAssertFalse(offline.isEmpty)
        XCTAssertTrue(offline.allSatisfy { $0 == "offline" }, "\(offline)")
        print("FarmTests: a killed station was declared lost after \(String(format: "%.1f", seconds)) s")

        XCTAssertEqual(b.stop(signal: SIGTERM), 0)
        let afterStop = try waitForStations(at: a, timeout: 5) { $0["b"]?["state"] as? String == "stopped" }
        XCTAssertEqual(afterStop["a"]?["state"] as? String, "online")
    }

    /// A job submitted at one station for another station's device runs there, once, and every
    /// station's WebSocket carries its messages with that station's name; a station that lacks
    /// the image refuses the job, for all to see; a device id at several stations needs a station.
    func testAJobSubmittedAnywhereRunsAtTheDevicesStationAndEveryStationSeesIt() throws {
        let a = try station("a", ["--emulate", "1"])
        let b = try station("b", ["--emulate", "1"])
        let c = try station("c", ["--emulate", "2", "--emulate-speed", "8M"])
        let image = TestImages.random(4 << 20, seed: 61)
        try c.write(image: "boot.img", image)
        _ = try waitForStations(at: a, timeout: 10) { stations in
            ["a", "b", "c"].allSatisfy { (stations[$0]?["devices"] as? [[String: Any]])?.isEmpty == false }
        }
        let watcher = try DashboardSocket(serverURL: b.url)
        for (path, server) in [("devices", c), ("images", c), ("devices", a)] {
            let listing = try curl(["\(server.url)/api/\(path)"])
            XCTAssertEqual(listing.events.first?["station"] as? String, server === c ? "c" : "a", listing.stdout)
        }

        let submitted = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU2","image":"boot.img"}"#, "\(a.url)/api/flash/start"])
        let answer = try XCTUnwrap(submitted.events.first, submitted.stdout)
        XCTAssertEqual(answer["status"] as? String, "queued")
        XCTAssertEqual(answer["station"] as? String, "c")
        let jobId = try XCTUnwrap(answer["jobId"] as? String)

        let end = try XCTUnwrap(watcher.end(of: "EMU2"), "b's WebSocket never saw the job end")
        XCTAssertEqual(end["type"] as? String, "flash_completed", "\(end)")
        let seen = watcher.messages(device: "EMU2").filter { $0["jobId"] as? String == jobId }
        XCTAssertEqual(seen.first?["type"] as? String, "flash_started", "\(seen)")
        XCTAssertTrue(seen.allSatisfy { $0["station"] as? String == "c" }, "\(seen)")
        XCTAssertGreaterThanOrEqual(seen.filter { $0["type"] as? String == "flash_progress" }.count, 1, "\(seen)")
        let partitions = try XCTUnwrap(c.banner.range(of: #"partitions in \S+/EMU2"#, options: .regularExpression).map { String(c.banner[$0].dropFirst("partitions in ".count)) })
        XCTAssertEqual(FileManager.default.contents(atPath: partitions + "/boot.img"), image, "the bytes must land at station c")
        XCTAssertEqual(try database.sql("SELECT station, state FROM farm_job WHERE job_id = '\(jobId)'"), "c|completed\n")
        // Any station answers for the job, as the farm recorded it.
        let asked = try curl(["\(b.url)/api/jobs/\(jobId)"])
        XCTAssertEqual(asked.events.first?["state"] as? String, "completed", asked.stdout)
        XCTAssertEqual(asked.events.first?["station"] as? String, "c", asked.stdout)
        XCTAssertEqual(asked.events.first?["bytesTransferred"] as? Int, image.count, asked.stdout)

        let missing = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU2","image":"absent.img"}"#, "\(a.url)/api/flash/start"])
        let refusedId = try XCTUnwrap(missing.events.first?["jobId"] as? String, missing.stdout)
        XCTAssertTrue(watcher.waitFor(timeout: 15) { messages in messages.contains { $0["jobId"] as? String == refusedId && $0["type"] as? String == "flash_failed" } })
        let refusal = watcher.messages(device: "EMU2").first { $0["jobId"] as? String == refusedId }
        XCTAssertEqual(refusal?["error"] as? String, "station 'c' refused the job: no image 'absent.img' in the image directory")

        // The CLI at a station, for another station's device: progress as if it ran here.
        let next = TestImages.random(1 << 20, seed: 62)
        try c.write(image: "next.img", next)
        let cli = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--server", a.url, "--device", "EMU1", "--station", "c", "--partition", "boot", "next.img", "--json"])
        XCTAssertEqual(cli.status, 0, cli.stderr + cli.stdout)
        XCTAssertEqual(cli.events.last?["type"] as? String, "flash_completed", cli.stdout)
        XCTAssertTrue(cli.events.allSatisfy { $0["station"] as? String == "c" }, cli.stdout)
        let emu1 = try XCTUnwrap(c.banner.range(of: #"partitions in \S+/EMU1"#, options: .regularExpression).map { String(c.banner[$0].dropFirst("partitions in ".count)) })
        XCTAssertEqual(FileManager.default.contents(atPath: emu1 + "/boot.img"), next)

        // The farm's history, at a station that ran neither job.
        let listed = try curl(["\(b.url)/api/history"])
        let history = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any])?["jobs"] as? [[String: Any]], listed.stdout)
        let done = try XCTUnwrap(history.first { $0["jobId"] as? String == jobId }, listed.stdout)
        XCTAssertEqual(done["station"] as? String, "c")
        XCTAssertEqual(done["result"] as? String, "completed")
        XCTAssertEqual(done["bytesTransferred"] as? Int, image.count)
        XCTAssertEqual(done["deviceId"] as? String, "EMU2")
        let recorded = try ProcessRunner.run("/usr/bin/xxh128sum", [c.images + "/boot.img"])
        XCTAssertEqual(done["xxh128"] as? String, String(recorded.stdout.prefix(32)), "the digest of what was sent, as xxh128sum gives it")
        let refused = try XCTUnwrap(history.first { $0["jobId"] as? String == refusedId }, listed.stdout)
        XCTAssertEqual(refused["result"] as? String, "failed")
        XCTAssertEqual(refused["error"] as? String, "station 'c' refused the job: no image 'absent.img' in the image directory")
        let order = history.compactMap { $0["jobId"] as? String }
        XCTAssertLessThan(try XCTUnwrap(order.firstIndex(of: refusedId)), try XCTUnwrap(order.firstIndex(of: jobId)), "newest first")

        let ambiguous = try curl(["-X", "POST", "-w", "\n%{http_code}", "-d", #"{"deviceId":"EMU1","image":"boot.img"}"#, "\(b.url)/api/flash/start"])
        XCTAssertTrue(ambiguous.stdout.contains(#"device 'EMU1' is at stations a, b, c: say which with \"station\""#), ambiguous.stdout)
        XCTAssertTrue(ambiguous.stdout.hasSuffix("409"), ambiguous.stdout)
    }

    /// A station killed during a job: within 12 s every other station's WebSocket carries the
    /// job's flash_failed with reason station_lost, and the farm's record says interrupted.
    func testTheJobsOfALostStationEndAsStationLostEverywhere() throws {
        let a = try station("a", ["--emulate", "1"])
        let b = try station("b", ["--emulate", "1"])
        let c = try station("c", ["--emulate", "2", "--emulate-speed", "1M"])
        try c.write(image: "boot.img", TestImages.random(32 << 20, seed: 71))
        _ = try waitForStations(at: a, timeout: 10) { ($0["c"]?["devices"] as? [[String: Any]])?.isEmpty == false }
        let watchers = [try DashboardSocket(serverURL: a.url), try DashboardSocket(serverURL: b.url)]
        let submitted = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU2","image":"boot.img"}"#, "\(b.url)/api/flash/start"])
        let jobId = try XCTUnwrap(submitted.events.first?["jobId"] as? String, submitted.stdout)
        for watcher in watchers {
            XCTAssertTrue(watcher.waitFor(timeout: 15) { $0.contains { $0["jobId"] as? String == jobId && $0["type"] as? String == "flash_progress" } })
        }
        XCTAssertNotNil(c.stop(signal: SIGKILL, timeout: 5))
        let killed = Date()
        for watcher in watchers {
            XCTAssertTrue(watcher.waitFor(timeout: 15) { $0.contains { $0["jobId"] as? String == jobId && $0["type"] as? String == "flash_failed" } })
            let failed = watcher.messages(device: "EMU2").last { $0["jobId"] as? String == jobId }
            XCTAssertEqual(failed?["reason"] as? String, "station_lost", "\(String(describing: failed))")
            XCTAssertEqual(failed?["station"] as? String, "c")
            XCTAssertEqual(failed?["error"] as? String, "station 'c' was lost (silent for 10 s) during the job")
        }
        XCTAssertLessThan(Date().timeIntervalSince(killed), 12)
        XCTAssertEqual(try database.sql("SELECT state FROM farm_job WHERE job_id = '\(jobId)'"), "interrupted\n")
    }

    /// Pause, resume and cancel asked at stations other than the one running the job.
    func testPauseResumeAndCancelFromAnotherStation() throws {
        let a = try station("a", ["--emulate", "1"])
        let b = try station("b", ["--emulate", "1"])
        let c = try station("c", ["--emulate", "2", "--emulate-speed", "1M"])
        try c.write(image: "boot.img", TestImages.random(32 << 20, seed: 81))
        _ = try waitForStations(at: a, timeout: 10) { ($0["c"]?["devices"] as? [[String: Any]])?.isEmpty == false }
        let watcher = try DashboardSocket(serverURL: a.url)
        let submitted = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU2","image":"boot.img"}"#, "\(a.url)/api/flash/start"])
        let jobId = try XCTUnwrap(submitted.events.first?["jobId"] as? String, submitted.stdout)
        func seen(_ type: String) -> Bool {
            watcher.waitFor(timeout: 15) { $0.contains { $0["jobId"] as? String == jobId && $0["type"] as? String == type } }
        }
        XCTAssertTrue(seen("flash_progress"))

        let paused = try curl(["-X", "POST", "\(a.url)/api/jobs/\(jobId)/pause"])
        XCTAssertEqual(paused.events.first?["status"] as? String, "pausing", paused.stdout)
        XCTAssertEqual(paused.events.first?["station"] as? String, "c")
        XCTAssertTrue(seen("flash_paused"))
        let atC = try curl(["\(c.url)/api/jobs/\(jobId)"])
        XCTAssertEqual(atC.events.first?["state"] as? String, "paused", atC.stdout)

        // A station that joins now replays the job to its dashboards: started and paused, at c.
        let d = try station("d", ["--emulate", "1"])
        let late = try DashboardSocket(serverURL: d.url)
        XCTAssertTrue(late.waitFor(timeout: 10) { $0.contains { $0["jobId"] as? String == jobId && $0["type"] as? String == "flash_paused" } })
        let replayed = late.messages(device: "EMU2").filter { $0["jobId"] as? String == jobId }
        XCTAssertEqual(replayed.first?["type"] as? String, "flash_started", "\(replayed)")
        XCTAssertTrue(replayed.allSatisfy { $0["station"] as? String == "c" }, "\(replayed)")

        let resumed = try curl(["-X", "POST", "\(b.url)/api/jobs/\(jobId)/resume"])
        XCTAssertEqual(resumed.events.first?["status"] as? String, "resuming", resumed.stdout)
        XCTAssertTrue(seen("flash_resumed"))

        let cancelled = try curl(["-X", "POST", "\(b.url)/api/jobs/\(jobId)/cancel"])
        XCTAssertEqual(cancelled.events.first?["status"] as? String, "cancelling", cancelled.stdout)
        XCTAssertTrue(seen("flash_failed"))
        XCTAssertTrue(late.waitFor(timeout: 10) { $0.contains { $0["jobId"] as? String == jobId && $0["type"] as? String == "flash_failed" } })
        let end = watcher.messages(device: "EMU2").last { $0["jobId"] as? String == jobId }
        XCTAssertEqual(end?["reason"] as? String, "cancelled", "\(String(describing: end))")
        XCTAssertTrue(try waitFor(timeout: 5) { try database.sql("SELECT state FROM farm_job WHERE job_id = '\(jobId)'") == "cancelled\n" })

        let again = try curl(["-X", "POST", "-w", "\n%{http_code}", "\(a.url)/api/jobs/\(jobId)/cancel"])
        XCTAssertTrue(again.stdout.contains("has already ended (cancelled) at station 'c'"), again.stdout)
        XCTAssertTrue(again.stdout.hasSuffix("409"), again.stdout)
    }

    /// The database goes away during a job: the job goes on and completes, its record
    /// reaches the database once it is back (one row, completed), and new jobs are refused with
    /// the reason meanwhile and taken again afterwards.
    func testAJobOutlivesTheDatabaseGoingAwayAndIsRecordedOnceWhenItIsBack() throws {
        let c = try station("c", ["--emulate", "1", "--emulate-speed", "2M"])
        let image = TestImages.random(8 << 20, seed: 91)
        try c.write(image: "boot.img", image)
        let submitted = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU1","image":"boot.img"}"#, "\(c.url)/api/flash/start"])
        let jobId = try XCTUnwrap(submitted.events.first?["jobId"] as? String, submitted.stdout)
        XCTAssertTrue(try waitFor(timeout: 10) { try database.sql("SELECT state FROM farm_job WHERE job_id = '\(jobId)'") == "running\n" })

        database.stop()
        XCTAssertTrue(try waitFor(timeout: 5) {
            let refused = try curl(["-X", "POST", "-w", "\n%{http_code}", "-d", #"{"deviceId":"EMU1","image":"boot.img"}"#, "\(c.url)/api/flash/start"])
            return refused.stdout.hasSuffix("503") && refused.stdout.contains("new jobs are refused until it is back (running jobs go on)")
        }, "new jobs must be refused while the database is away")
        // The 4 s job ends while the database is away: its end waits in the station's outbox.
        XCTAssertTrue(try waitFor(timeout: 15) { try curl(["\(c.url)/api/jobs/\(jobId)"]).events.first?["state"] as? String == "completed" })
        usleep(1_000_000)
        try database.start()

        XCTAssertTrue(try waitFor(timeout: 30) {
            (try? database.sql("SELECT count(*), min(state) FROM farm_job WHERE job_id = '\(jobId)'")) == "1|completed\n"
        }, "the job's end must reach the database once it is back")
        let local = try curl(["\(c.url)/api/jobs/\(jobId)"])
        XCTAssertEqual(local.events.first?["state"] as? String, "completed", local.stdout)
        let partitions = try XCTUnwrap(c.banner.range(of: #"partitions in \S+/EMU1"#, options: .regularExpression).map { String(c.banner[$0].dropFirst("partitions in ".count)) })
        XCTAssertEqual(FileManager.default.contents(atPath: partitions + "/boot.img"), image)

        var again: CommandResult?
        XCTAssertTrue(try waitFor(timeout: 10) {
            again = try curl(["-X", "POST", "-d", #"{"deviceId":"EMU1","image":"boot.img"}"#, "\(c.url)/api/flash/start"])
            return again?.events.first?["jobId"] != nil
        }, "new jobs must be taken again: \(again?.stdout ?? "")")
    }

    /// 300 jobs submitted at once at three stations for twelve devices of the farm: each runs
    /// exactly once (one flash_started, one flash_completed, one partition written) and none is
    /// lost.
    func testThreeHundredJobsSubmittedAtOnceEachRunExactlyOnce() throws {
        let names = ["a", "b", "c"]
        let servers = try names.map { try station($0, ["--emulate", "4"]) }
        let image = TestImages.random(64 << 10, seed: 101)
        for server in servers { try server.write(image: "small.img", image) }
        _ = try waitForStations(at: servers[0], timeout: 10) { stations in
            names.allSatisfy { ((stations[$0]?["devices"] as? [[String: Any]]) ?? []).filter { $0["kind"] as? String == "fastboot-tcp" }.count == 4 }
        }
        let watcher = try DashboardSocket(serverURL: servers[0].url)
        let count = 300
        let answers = ConcurrentAnswers()
        let urls = servers.map(\.url)
        DispatchQueue.concurrentPerform(iterations: count) { index in
            let body = #"{"deviceId":"EMU\#(index % 4 + 1)","station":"\#(names[index / 4 % 3])","image":"small.img","partition":"p\#(index)"}"#
            let result = try? ProcessRunner.run("/usr/bin/curl", ["-sS", "-X", "POST", "-d", body, "\(urls[index % 3])/api/flash/start"], timeout: 60)
            answers.record(index, result?.events.first?["jobId"] as? String, result?.stdout ?? "")
        }
        let jobIds = try answers.all(count)
        XCTAssertEqual(Set(jobIds).count, count)

        let allCompleted = try waitFor(timeout: 120) { try database.sql("SELECT count(*) FROM farm_job WHERE state = 'completed'") == "\(count)\n" }
        let states = try database.sql("SELECT state, count(*) FROM farm_job GROUP BY state")
        XCTAssertTrue(allCompleted, states)
        XCTAssertTrue(watcher.waitFor(timeout: 30) { $0.filter { $0["type"] as? String == "flash_completed" }.count >= count })
        let messages = watcher.messages
        for type in ["flash_started", "flash_completed"] {
            let perJob = Dictionary(grouping: messages.filter { $0["type"] as? String == type }, by: { $0["jobId"] as? String ?? "" })
            XCTAssertEqual(Set(perJob.keys), Set(jobIds), type)
            XCTAssertTrue(perJob.values.allSatisfy { $0.count == 1 }, "\(type) more than once: \(perJob.filter { $0.value.count > 1 }.keys)")
        }
        var written = 0
        for (index, server) in servers.enumerated() {
            let root = try XCTUnwrap(server.banner.range(of: #"partitions in \S+/EMU1"#, options: .regularExpression)
                .map { String(server.banner[$0].dropFirst("partitions in ".count).dropLast("/EMU1".count)) })
            for device in 1...4 {
                let files = try FileManager.default.contentsOfDirectory(atPath: "\(root)/EMU\(device)").filter { $0.hasPrefix("p") && $0.hasSuffix(".img") }
                let expected = (0..<count).filter { $0 % 4 + 1 == device && $0 / 4 % 3 == index }.map { "p\($0).img" }
                XCTAssertEqual(Set(files), Set(expected), "station \(names[index]) EMU\(device)")
                for file in files { XCTAssertEqual(FileManager.default.contents(atPath: "\(root)/EMU\(device)/\(file)"), image) }
                written += files.count
            }
        }
        XCTAssertEqual(written, count)
    }

    private func waitFor(timeout: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return true }
            usleep(100_000)
        }
        return false
    }

    private func curl(_ arguments: [String]) throws -> CommandResult {
        try ProcessRunner.run("/usr/bin/curl", ["-sS"] + arguments, timeout: 30)
    }

    /// A name in use, a database that is not there, a server that refuses: each is refused at
    /// start with a sentence that says which.
    func testAStationThatCannotJoinSaysWhyAndDoesNotServe() throws {
        _ = try station("a")
        let images = try TestScratch.directory("farm-images")
        func serve(_ farm: String, station: String) throws -> CommandResult {
            try ProcessRunner.run(ProcessRunner.flashctl, [
                "serve", "--port", "0", "--images", images, "--history", images + "/history.sqlite", "--farm", farm, "--station", station,
            ], timeout: 30)
        }
        let taken = try serve(database.url, station: "a")
        XCTAssertEqual(taken.status, 1)
        XCTAssertTrue(taken.stderr.contains("station name 'a' is taken by a station at http://127.0.0.1:"), taken.stderr)
        XCTAssertFalse(taken.stdout.contains("listening on"), taken.stdout)

        let missing = try serve(database.url.replacingOccurrences(of: "/postgres", with: "/nodb"), station: "z")
        XCTAssertTrue(missing.stderr.contains(#"cannot join the farm at postgres://flashctl@127.0.0.1:\#(database.port)/nodb: database "nodb" does not exist"#), missing.stderr)

        let closed = try serve("postgres://flashctl@127.0.0.1:1/postgres", station: "z")
        XCTAssertTrue(closed.stderr.contains("cannot join the farm at postgres://flashctl@127.0.0.1:1/postgres: connection refused"), closed.stderr)
        XCTAssertLessThan(closed.seconds, 10, "a refused connection must not be retried for long")

        let plain = try serve(database.url + "?sslmode=require", station: "z")
        XCTAssertTrue(plain.stderr.contains("the server does not offer TLS"), plain.stderr)
    }
}

/// Servers started on several threads at once, by index.
private final class ConcurrentStarts: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Int: Result<ServeProcess, Error>] = [:]

    func record(_ index: Int, _ result: Result<ServeProcess, Error>) {
        lock.lock()
        results[index] = result
        lock.unlock()
    }

    func servers(_ count: Int) throws -> [ServeProcess] {
        lock.lock()
        defer { lock.unlock() }
        return try (0..<count).map { index in
            guard let result = results[index] else { throw NSError(domain: "FarmTests", code: 1) }
            return try result.get()
        }
    }
}

/// Answers to requests sent on several threads at once, by index.
private final class ConcurrentAnswers: @unchecked Sendable {
    private let lock = NSLock()
    private var jobIds: [Int: String] = [:]
    private var failures: [String] = []

    func record(_ index: Int, _ jobId: String?, _ output: String) {
        lock.lock()
        defer { lock.unlock() }
        if let jobId { jobIds[index] = jobId } else { failures.append("request \(index): \(output)") }
    }

    func all(_ count: Int) throws -> [String] {
        lock.lock()
        defer { lock.unlock() }
        guard failures.isEmpty, jobIds.count == count else {
            throw NSError(domain: "FarmTests", code: 2, userInfo: [NSLocalizedDescriptionKey: "\(failures.count) requests failed: \(failures.prefix(3))"])
        }
        return (0..<count).compactMap { jobIds[$0] }
    }
}
