@testable import FlashServer
import Foundation
import Testing

/// `--farm` URLs read as libpq reads them, and its password file.
@Suite final class FarmDatabaseURLTests {
    let directory = NSTemporaryDirectory() + "flashctl-pgpass-\(UUID().uuidString)"

    init() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    @Test func aFullURLGivesEveryPart() throws {
        let url = try FarmDatabaseURL.parse("postgresql://lab:s%40cret@db.lab:6543/farm?sslmode=verify-full&sslrootcert=/etc/ca.pem", environment: [:])
        #expect(url == FarmDatabaseURL(host: "db.lab", port: 6543, socketDirectory: nil, user: "lab", password: "s@cret", database: "farm",
                                       sslMode: .verifyFull, sslRootCertificate: "/etc/ca.pem"))
        #expect(url.redacted == "postgres://lab@db.lab:6543/farm")
    }

    @Test func leftOutPartsTakeLibpqsDefaults() throws {
        let url = try FarmDatabaseURL.parse("postgres://lab@db.lab", environment: [:])
        #expect(url.port == 5432)
        #expect(url.database == "lab")
        #expect(url.sslMode == .prefer)
        #expect(url.password == nil)
        let socket = try FarmDatabaseURL.parse("postgres:///farm?host=/run/postgresql&user=lab", environment: [:])
        #expect(socket.socketDirectory == "/run/postgresql")
        #expect(socket.user == "lab")
        #expect(socket.redacted == "postgres://lab@/run/postgresql/.s.PGSQL.5432/farm")
    }

    @Test func thePasswordComesFromThePasswordFileWhenTheURLHasNone() throws {
        let file = directory + "/pgpass"
        try "# comment\nother:5432:farm:lab:wrong\ndb.lab:5432:farm:lab:pa\\:ss\n*:*:*:lab:fallback\n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o600)
        let environment = ["PGPASSFILE": file]
        #expect(try FarmDatabaseURL.parse("postgres://lab@db.lab/farm", environment: environment).password == "pa:ss")
        #expect(try FarmDatabaseURL.parse("postgres://lab@elsewhere/farm", environment: environment).password == "fallback")
        #expect(try FarmDatabaseURL.parse("postgres://lab:given@db.lab/farm", environment: environment).password == "given")
        // As libpq does, a file others may read is ignored.
        chmod(file, 0o644)
        #expect(try FarmDatabaseURL.parse("postgres://lab@db.lab/farm", environment: environment).password == nil)
    }

    @Test func wrongURLsAreRefusedWithTheReason() {
        #expect(throws: (any Error).self) { try FarmDatabaseURL.parse("http://db.lab/farm", environment: [:]) }
        do {
            _ = try FarmDatabaseURL.parse("postgres://lab@db.lab/farm?sslmode=always", environment: [:])
            Issue.record("an unknown sslmode was taken")
        } catch {
            #expect("\(error)".contains("sslmode must be disable, allow, prefer, require, verify-ca or verify-full, not 'always'"))
        }
    }

    @Test func stationNamesAreCheckedAsArguments() {
        #expect(FarmConfiguration.isValidStationName("bench-3.line_a"))
        #expect(!FarmConfiguration.isValidStationName("bench 3"))
        #expect(!FarmConfiguration.isValidStationName(""))
        #expect(!FarmConfiguration.isValidStationName(String(repeating: "a", count: 64)))
    }
}
