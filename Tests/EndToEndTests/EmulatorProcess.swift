import Foundation

/// `flashctl emulate` running in the background on a free port, with partitions in a temp folder.
final class EmulatorProcess {
    let directory: String
    let port: UInt16
    let serial: String
    private let process: Process

    init(serial: String = "EMU-TEST", extraArguments: [String] = []) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-emu-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.serial = serial
        process = Process()
        process.executableURL = URL(fileURLWithPath: ProcessRunner.flashctl)
        process.arguments = ["emulate", "--tcp", "0", "--dir", directory, "--serial", serial] + extraArguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        // The first line names the port it listens on: "... on tcp:127.0.0.1:PORT, ...".
        var line = Data()
        let deadline = Date().addingTimeInterval(20)
        while !line.contains(UInt8(ascii: "\n")) && Date() < deadline {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += chunk
        }
        let text = String(decoding: line, as: UTF8.self)
        guard let range = text.range(of: #"tcp:[0-9.]+:([0-9]+)"#, options: .regularExpression),
              let port = UInt16(text[range].split(separator: ":").last ?? "") else {
            process.terminate()
            throw NSError(domain: "EmulatorProcess", code: 1, userInfo: [NSLocalizedDescriptionKey: "emulator did not start: \(text)"])
        }
        self.port = port
    }

    var tcpSelector: String { "tcp:127.0.0.1:\(port)" }

    /// The testbed's --device argument that bridges an emulated USB device to this emulator.
    func usbDevice(serial: String? = nil, port portPath: String? = nil, extra: String = "") -> String {
        var spec = "tcp=127.0.0.1:\(port),serial=\(serial ?? self.serial)"
        if let portPath { spec += ",port=\(portPath)" }
        if !extra.isEmpty { spec += "," + extra }
        return spec
    }

    func partition(_ name: String) -> Data? {
        FileManager.default.contents(atPath: directory + "/\(name).img")
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit {
        stop()
    }
}

enum TestImages {
    /// Random bytes that compress poorly, so nothing about the transfer can be guessed.
    static func random(_ size: Int, seed: UInt64 = 42) -> Data {
        var state = seed
        var data = Data(count: size)
        data.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for index in 0..<words.count {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                words[index] = state
            }
        }
        return data
    }

    static func write(_ data: Data, name: String) throws -> String {
        let path = try TestScratch.directory("img") + "/" + name
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }
}
