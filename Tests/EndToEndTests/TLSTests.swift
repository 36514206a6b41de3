import Foundation
import XCTest

/// `flashctl serve --tls-cert --tls-key`: https and wss end to end with curl and the CLI, with a
/// certificate made at test time; and the warning an open address without TLS gets.
final class TLSTests: XCTestCase {
    private var servers: [ServeProcess] = []

    override func tearDown() {
        servers.forEach { $0.removeFiles() }
        servers = []
    }

    /// A self-signed certificate for 127.0.0.1 and its key, in `directory`.
    private func certificate(in directory: String) throws -> (cert: String, key: String) {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let cert = directory + "/cert.pem", key = directory + "/key.pem"
        let made = try ProcessRunner.run("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ])
        XCTAssertEqual(made.status, 0, made.stderr)
        return (cert, key)
    }

    func testHTTPSAndWSSWithCurlAndTheCLI() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-tls-\(UUID().uuidString)").path
        let (cert, key) = try certificate(in: base + "/pki")
        let server = try ServeProcess(base: base, arguments: ["--emulate", "1", "--tls-cert", cert, "--tls-key", key])
        servers.append(server)
        XCTAssertTrue(server.url.hasPrefix("https://127.0.0.1:"), server.banner)
        XCTAssertTrue(server.banner.contains("WebSocket wss://127.0.0.1:"), server.banner)
        try server.write(image: "boot.img", TestImages.random(1 << 20))

        let trusted = try ProcessRunner.run("/usr/bin/curl", ["-sS", "--cacert", cert, server.url + "/api/devices"])
        XCTAssertEqual(trusted.status, 0, trusted.stderr)
        XCTAssertTrue(trusted.stdout.contains("\"EMU1\""), trusted.stdout)
        let untrusted = try ProcessRunner.run("/usr/bin/curl", ["-sS", server.url + "/api/devices"])
        XCTAssertNotEqual(untrusted.status, 0, "curl must not trust a self-signed certificate unasked")

        // The CLI submits over https and follows the job over wss.
        let flash = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--server", server.url, "--ca", cert, "--device", "EMU1", "boot.img", "--json"])
        XCTAssertEqual(flash.status, 0, flash.stderr)
        XCTAssertEqual(flash.events.last?["type"] as? String, "flash_completed", flash.stdout)
        let jobs = try ProcessRunner.run(ProcessRunner.flashctl, ["jobs", "--server", server.url, "--ca", cert])
        XCTAssertEqual(jobs.status, 0, jobs.stderr)
        XCTAssertTrue(jobs.stdout.contains("completed"), jobs.stdout)
        let history = try ProcessRunner.run(ProcessRunner.flashctl, ["history", "--server", server.url, "--ca", cert])
        XCTAssertEqual(history.status, 0, history.stderr)
        // Without the CA the CLI says what is missing.
        let refused = try ProcessRunner.run(ProcessRunner.flashctl, ["jobs", "--server", server.url])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("is its certificate trusted (--ca FILE)"), refused.stderr)
    }

    func testAnOpenAddressWithoutTLSIsWarnedAbout() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-tls-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        try "a-token-of-sixteen-characters".write(toFile: base + "/token", atomically: true, encoding: .utf8)
        let server = try RunningCommand(ProcessRunner.flashctl, [
            "serve", "--host", "0.0.0.0", "--port", "0", "--token-file", base + "/token", "--images", base + "/images", "--history", base + "/history.sqlite",
        ])
        XCTAssertTrue(server.waitFor("listening on"), server.output)
        XCTAssertTrue(server.output.contains("warning: serving 0.0.0.0 without TLS: the access token and the progress travel in clear text"), server.output)
        server.signal(SIGTERM)
        _ = server.wait(timeout: 15)
    }
}
