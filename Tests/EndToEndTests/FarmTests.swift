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
        XCTAssertEqual(try database.sql("SELECT version FROM flashctl_schema"), "1\n")

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
