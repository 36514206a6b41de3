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

    /// Over one TLS connection: a plain request, then the WebSocket upgrade and a ping.
    func testAnUpgradeOnAReusedTLSConnection() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-tls-\(UUID().uuidString)").path
        let (cert, key) = try certificate(in: base + "/pki")
        let server = try ServeProcess(base: base, arguments: ["--emulate", "1", "--tls-cert", cert, "--tls-key", key])
        servers.append(server)
        let port = try XCTUnwrap(server.url.split(separator: ":").last.flatMap { Int($0) })
        let client = """
        import json, socket, ssl, sys
        port, cafile = int(sys.argv[1]), sys.argv[2]
        s = ssl.create_default_context(cafile=cafile).wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
        data = b""
        def take(n):
            global data
            while len(data) < n:
                chunk = s.recv(65536)
                if not chunk: raise SystemExit("closed")
                data += chunk
            part, data = data[:n], data[n:]
            return part
        def response():
            global data
            while b"\\r\\n\\r\\n" not in data:
                data += s.recv(65536)
            head, data = data.split(b"\\r\\n\\r\\n", 1)
            lines = head.decode().split("\\r\\n")
            length = [int(l.split(":")[1]) for l in lines if l.lower().startswith("content-length:")]
            body = take(length[0]) if length else b""
            print(lines[0] + (" with devices" if b'"devices"' in body else ""))
        s.sendall(b"GET /api/devices HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
        response()
        s.sendall(b"GET /flash-progress HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n")
        response()
        ping = b'{"type":"ping","timestamp":5}'
        mask = b"\\x01\\x02\\x03\\x04"
        s.sendall(bytes([0x81, 0x80 | len(ping)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(ping)))
        while True:
            header = take(2)
            length = header[1] & 0x7F
            if length == 126: length = int.from_bytes(take(2), "big")
            message = json.loads(take(length))
            if message["type"] == "pong":
                print("pong")
                break
        """
        let run = try ProcessRunner.run("/usr/bin/python3", ["-c", client, String(port), cert], timeout: 30)
        XCTAssertEqual(run.status, 0, run.stderr)
        let lines = run.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3, run.stdout)
        XCTAssertEqual(lines.first, "HTTP/1.1 200 OK with devices", run.stdout)
        XCTAssertEqual(lines.dropFirst().first, "HTTP/1.1 101 Switching Protocols", run.stdout)
        XCTAssertEqual(lines.last, "pong", run.stdout)
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
