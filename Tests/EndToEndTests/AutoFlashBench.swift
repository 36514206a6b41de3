import Foundation
import XCTest

/// `flashctl serve --auto-flash` running inside the USB test bed (real libusb and libudev over
/// umockdev), with the test bed's control channel to plug emulated devices in and out.
final class AutoFlashBench {
    let base: String
    let images: String
    let control: TestbedControl
    let url: String
    let server: RunningCommand

    /// `profiles`: the YAML text; `images`: files put into the image directory first; `devices`:
    /// test bed SPECs of devices plugged in before the server starts.
    init(profiles: String, images files: [String: Data], devices: [String] = [], serveArguments: [String] = []) throws {
        base = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-autoflash-\(UUID().uuidString)").path
        images = base + "/images"
        try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        control = try TestbedControl(path: base + "/control")
        for (name, data) in files { try data.write(to: URL(fileURLWithPath: images + "/" + name)) }
        try profiles.write(toFile: base + "/profiles.yaml", atomically: true, encoding: .utf8)
        server = try RunningCommand("/usr/bin/python3", [
            ProcessRunner.usbTestbed, "--control", control.path,
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

    /// Plugs or unplugs through the test bed's control channel (`add SPEC`, `remove SERIAL`,
    /// `replug SERIAL`); returns once it is done.
    @discardableResult
    func plug(_ command: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        try control.send(command, file: file, line: line)
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
