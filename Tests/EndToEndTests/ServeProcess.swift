import Foundation

/// `flashctl serve` running as a real process on a free port, with emulated devices, its own
/// image directory and history.
final class ServeProcess {
    let base: String
    let images: String
    let history: String
    let url: String
    let banner: String
    private let process: Process

    init(base: String? = nil, arguments: [String] = ["--emulate", "2"]) throws {
        self.base = base ?? FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-serve-\(UUID().uuidString)").path
        images = self.base + "/images"
        history = self.base + "/history.sqlite"
        try FileManager.default.createDirectory(atPath: images, withIntermediateDirectories: true)
        // The emulated devices' partitions go under $TMPDIR: under `base`, so that `removeFiles`
        // takes them too when it has to kill the server (a stopped server removes them itself).
        try FileManager.default.createDirectory(atPath: self.base + "/tmp", withIntermediateDirectories: true)
        process = Process()
        process.environment = ProcessInfo.processInfo.environment.merging(["TMPDIR": self.base + "/tmp"]) { $1 }
        process.executableURL = URL(fileURLWithPath: ProcessRunner.flashctl)
        process.arguments = ["serve", "--port", "0", "--images", images, "--history", history] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        // The banner ends with the emulated devices; read until the last one is named.
        var text = ""
        let deadline = Date().addingTimeInterval(20)
        let wanted = arguments.firstIndex(of: "--emulate").map { Int(arguments[$0 + 1]) ?? 0 } ?? 0
        while Date() < deadline {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
            if text.contains("listening on"), text.components(separatedBy: "emulated device ").count - 1 >= wanted, text.hasSuffix("\n") { break }
        }
        banner = text
        guard let range = text.range(of: #"https?://127\.0\.0\.1:[0-9]+"#, options: .regularExpression) else {
            process.terminate()
            throw NSError(domain: "ServeProcess", code: 1, userInfo: [NSLocalizedDescriptionKey: "flashctl serve did not start: \(text)"])
        }
        url = String(text[range])
    }

    var pid: Int32 { process.processIdentifier }

    func write(image name: String, _ data: Data) throws {
        try data.write(to: URL(fileURLWithPath: images + "/" + name))
    }

    /// Sends `signal` and waits up to `timeout` seconds for the exit; returns the exit status, or
    /// nil if it did not exit in time (it is then killed).
    func stop(signal: Int32 = SIGTERM, timeout: Double = 15) -> Int32? {
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    func removeFiles() {
        _ = stop(signal: SIGKILL)
        try? FileManager.default.removeItem(atPath: base)
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// A command running in the background whose output lines can be watched while it runs.
final class RunningCommand: @unchecked Sendable {
    private let process = Process()
    private let lock = NSLock()
    private var out = ""
    private let done = DispatchSemaphore(value: 0)

    init(_ executable: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self else { return }
            if data.isEmpty {
                handle.readabilityHandler = nil
                self.done.signal()
                return
            }
            self.lock.lock()
            self.out += String(decoding: data, as: UTF8.self)
            self.lock.unlock()
        }
        try process.run()
    }

    var output: String {
        lock.lock(); defer { lock.unlock() }
        return out
    }

    /// Waits until the output contains `text`; false after `timeout` seconds.
    func waitFor(_ text: String, timeout: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if output.contains(text) { return true }
            usleep(10_000)
        }
        return false
    }

    func signal(_ number: Int32) {
        kill(process.processIdentifier, number)
    }

    /// The exit status, or nil if still running after `timeout` seconds (then killed).
    func wait(timeout: Double = 30) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            return nil
        }
        _ = done.wait(timeout: .now() + 2)
        return process.terminationStatus
    }

    /// Output lines that are JSON objects.
    var events: [[String: Any]] {
        output.split(separator: "\n").compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
    }
}
