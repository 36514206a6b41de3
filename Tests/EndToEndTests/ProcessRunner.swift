import Foundation
import XCTest

extension Dictionary where Key == String, Value == Any {
    /// A progress message's stage without the note that the ETA is still being estimated.
    var stageName: String? {
        (self["stage"] as? String).map { $0.hasSuffix(" (estimating time left)") ? String($0.dropLast(" (estimating time left)".count)) : $0 }
    }
}

/// What a finished command printed and how it ended.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var seconds: Double

    /// stdout lines that are JSON objects, parsed.
    var events: [[String: Any]] {
        stdout.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
    }

    func events(ofType type: String) -> [[String: Any]] {
        events.filter { $0["type"] as? String == type }
    }
}

enum ProcessRunner {
    /// The package's build folder, where `swift build` put flashctl next to the test bundle.
    static let buildDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    static let flashctl = buildDirectory + "/flashctl"
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let usbTestbed = packageRoot + "/testbed/fastboot_usb_testbed.py"

    /// Runs a command to its end; a command still running after `timeout` seconds is killed and
    /// the test fails, because a hang is exactly what users must never see.
    static func run(_ executable: String, _ arguments: [String], timeout: Double = 60, stdin: String? = nil, environment: [String: String] = [:],
                    file: StaticString = #filePath, line: UInt = #line) throws -> CommandResult {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outPath = directory.appendingPathComponent("out").path
        let errPath = directory.appendingPathComponent("err").path
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        let input = Pipe()
        process.standardInput = input
        let start = Date()
        try process.run()
        if let stdin {
            input.fileHandleForWriting.write(Data(stdin.utf8))
        }
        try? input.fileHandleForWriting.close()
        while process.isRunning && Date().timeIntervalSince(start) < timeout {
            usleep(20_000)
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            XCTFail("\(executable) \(arguments.joined(separator: " ")) hung for \(timeout) s; stderr: \(err)", file: file, line: line)
        }
        process.waitUntilExit()
        return CommandResult(
            status: process.terminationStatus,
            stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "",
            seconds: Date().timeIntervalSince(start)
        )
    }

    /// Runs flashctl with the real libusb above emulated USB fastboot devices (umockdev), each
    /// bridged to an emulated fastboot device listening on TCP.
    static func flashctlOverUSB(devices: [String], _ arguments: [String], timeout: Double = 60,
                                file: StaticString = #filePath, line: UInt = #line) throws -> CommandResult {
        var testbedArguments = [usbTestbed]
        for device in devices {
            testbedArguments += ["--device", device]
        }
        testbedArguments += ["--", flashctl] + arguments
        return try run("/usr/bin/python3", testbedArguments, timeout: timeout, file: file, line: line)
    }
}
