import Foundation
import XCTest

/// A real PostgreSQL from Debian's packages, in a folder of its own on a free loopback port, for
/// the farm's tests: `initdb` with trust authentication and a `flashctl` superuser, run as the
/// `postgres` user when the tests run as root (PostgreSQL refuses root).
final class PostgresServer {
    let directory: String
    let port: Int
    private let binaries: String
    private var running = false

    /// The URL stations take with `--farm`.
    var url: String { "postgres://flashctl@127.0.0.1:\(port)/postgres" }

    init() throws {
        binaries = try Self.findBinaries()
        directory = try TestScratch.directory("postgres")
        if geteuid() == 0 {
            guard let user = getpwnam("postgres") else { throw Self.failure("no 'postgres' user: install Debian's postgresql package (scripts/setup.sh)") }
            XCTAssertEqual(chown(directory, user.pointee.pw_uid, user.pointee.pw_gid), 0)
        }
        port = try Self.freePort()
        try run("initdb", ["-D", directory + "/data", "-A", "trust", "-U", "flashctl", "--no-sync"])
        try start()
    }

    func start() throws {
        try run("pg_ctl", ["-D", directory + "/data", "-l", directory + "/log", "-w", "-t", "30", "-o",
                           "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start"])
        running = true
    }

    /// Stops at once, as a hub that vanishes would (no checkpoint, connections cut).
    func stop() {
        guard running else { return }
        _ = try? run("pg_ctl", ["-D", directory + "/data", "-m", "immediate", "-w", "stop"])
        running = false
    }

    /// Runs SQL with psql and returns what it printed (unaligned, tuples only).
    func sql(_ statement: String) throws -> String {
        try run("psql", ["-h", "127.0.0.1", "-p", "\(port)", "-U", "flashctl", "-d", "postgres", "-At", "-c", statement])
    }

    deinit {
        stop()
    }

    /// Runs a PostgreSQL tool through Python's subprocess, which closes every other descriptor in
    /// the child: the server that `pg_ctl start` leaves running would otherwise hold the one
    /// Foundation's Process watches to learn that its child ended, and the wait would never end.
    @discardableResult
    private func run(_ tool: String, _ arguments: [String]) throws -> String {
        let command = (geteuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []) + [binaries + "/" + tool] + arguments
        let result = try ProcessRunner.run(
            "/usr/bin/python3", ["-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"] + command, timeout: 60)
        guard result.status == 0 else {
            let log = (try? String(contentsOfFile: directory + "/log", encoding: .utf8)) ?? ""
            throw Self.failure("\(tool) \(arguments.joined(separator: " ")) failed: \(result.stderr)\(result.stdout)\n\(log)")
        }
        return result.stdout
    }

    /// The newest PostgreSQL under /usr/lib/postgresql (Debian's layout).
    private static func findBinaries() throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        guard let newest = versions.last, FileManager.default.isExecutableFile(atPath: "\(root)/\(newest)/bin/pg_ctl") else {
            throw failure("PostgreSQL is not installed (\(root)/N/bin/pg_ctl): run scripts/setup.sh")
        }
        return "\(root)/\(newest)/bin"
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw failure("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func failure(_ message: String) -> NSError {
        NSError(domain: "PostgresServer", code: 1, userInfo: [NSLocalizedDescriptionKey: message])
    }
}
