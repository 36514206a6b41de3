import Foundation
import XCTest

/// `flashctl serve --auto-flash` running inside the USB test bed (real libusb and libudev over
/// umockdev), with the test bed's control channel to plug emulated devices in and out.
final class AutoFlashBench {
    let base: String
    let images: String
    let control: String
    let url: String
    let server: RunningCommand
    private var commands = 0

    /// `profiles`: the YAML text; `images`: files put into the image directory first; `devices`:
    /// test bed SPECs of devices plugged in before the server starts.
    init(profiles: String, images files: [String: Data], devices: [String] = [], serveArguments: [String] = []) throws {
        base = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-autoflash-\(UUID().uuidString)").path
        images = base + "/images"
        control = base + "/control"
        try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        for (name, data) in files { try data.write(to: URL(fileURLWithPath: images + "/" + name)) }
        try profiles.write(toFile: base + "/profiles.yaml", atomically: true, encoding: .utf8)
        guard mkfifo(control, 0o600) == 0 else { throw NSError(domain: "AutoFlashBench", code: 1, userInfo: [NSLocalizedDescriptionKey: "mkfifo \(control) failed"]) }
        server = try RunningCommand("/usr/bin/python3", [
            ProcessRunner.usbTestbed, "--control", control,
        ] + devices.flatMap { ["--device", $0] } + [
            "--",
            ProcessRunner.flashctl, "serve", "--port", "0", "--images", images, "--history", base + "/history.sqlite",
            "--progress-rate", "20", "--auto-flash", base + "/profiles.yaml",
        ] + serveArguments)
        guard server.waitFor("auto-flash: watching udev", timeout: 30), server.waitFor("listening on http://", timeout: 10),
              let range = server.output.range(of: #"http://127\.0\.0\.1:[0-9]+"#, options: .regularExpression) else {
            server.signal(SIGKILL)
            throw NSError(domain: "AutoFlashBench", code: 2, userInfo: [NSLocalizedDescriptionKey: "flashctl serve --auto-flash did not start: \(server.output)"])
        }
        url = String(server.output[range])
    }

    /// Sends one control command (`add SPEC`, `remove SERIAL`, `replug SERIAL`) and returns the
    /// test bed's reply once the command's effect is complete.
    @discardableResult
    func plug(_ command: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: control))
        handle.write(Data((command + "\n").utf8))
        try handle.close()
        commands += 1
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let lines = ((try? String(contentsOfFile: control + ".ack", encoding: .utf8)) ?? "").split(separator: "\n", omittingEmptySubsequences: false)
            // "ready", then one line per command; the last element is what follows the final newline.
            if lines.count >= commands + 2 {
                let reply = String(lines[commands])
                XCTAssertTrue(reply.hasPrefix("ok "), "\(command): \(reply)", file: file, line: line)
                return reply
            }
            usleep(10_000)
        }
        XCTFail("the test bed did not answer '\(command)'", file: file, line: line)
        return ""
    }

    /// `GET /api/jobs` as JSON objects.
    func jobs() throws -> [[String: Any]] {
        let result = try ProcessRunner.run("/usr/bin/curl", ["-sS", url + "/api/jobs"], timeout: 10)
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
        if let list = json as? [[String: Any]] { return list }
        return (json as? [String: Any])?["jobs"] as? [[String: Any]] ?? []
    }

    /// Stops the server (and so the test bed) and removes the files.
    func stop() {
        server.signal(SIGTERM)
        _ = server.wait(timeout: 15)
        try? FileManager.default.removeItem(atPath: base)
    }
}
