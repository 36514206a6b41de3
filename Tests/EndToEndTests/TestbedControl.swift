import Foundation
import XCTest

/// The USB test bed's hot-plug control channel (`fastboot_usb_testbed.py --control PATH`): one
/// command per line into the FIFO, one reply line per command in `PATH.ack` once its effect is
/// complete (the file starts with `ready`).
final class TestbedControl {
    let path: String
    private var sent = 0

    /// Makes the FIFO, so the test bed uses it as it is.
    init(path: String) throws {
        self.path = path
        guard mkfifo(path, 0o600) == 0 else {
            throw NSError(domain: "TestbedControl", code: 1, userInfo: [NSLocalizedDescriptionKey: "mkfifo \(path) failed: \(String(cString: strerror(errno)))"])
        }
    }

    /// Sends `add SPEC`, `remove SERIAL|PORT` or `replug SERIAL|PORT` and returns the test bed's
    /// reply once the plug or unplug is done; a reply other than `ok ...` fails the test.
    @discardableResult
    func send(_ command: String, timeout: Double = 20, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path), file: file, line: line)
        handle.write(Data((command + "\n").utf8))
        try handle.close()
        sent += 1
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let replies = completeLines()
            if replies.count > sent {
                let reply = replies[sent]
                XCTAssertTrue(reply.hasPrefix("ok "), "\(command): \(reply)", file: file, line: line)
                return reply
            }
            usleep(10_000)
        }
        XCTFail("the test bed did not answer '\(command)' within \(timeout) s", file: file, line: line)
        return ""
    }

    /// Waits for the test bed's `ready` line; false after `timeout` seconds.
    func waitUntilReady(timeout: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if completeLines().first == "ready" { return true }
            usleep(10_000)
        }
        return false
    }

    /// Lines of `PATH.ack` that have their newline.
    private func completeLines() -> [String] {
        let text = (try? String(contentsOfFile: path + ".ack", encoding: .utf8)) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
        try? FileManager.default.removeItem(atPath: path + ".ack")
    }
}
