import Foundation
import XCTest

/// Ctrl-C on `flashctl flash` in the middle of a USB download, through the real flashctl binary
/// and the real libusb above the umockdev test bed. The test bed keeps each emulated device's TCP
/// link (the emulated device's fastboot state) from one flashctl process to the next, as a real
/// device keeps its state, and drops it at USBDEVFS_RESET. So the second flashctl below reaches
/// the very same device session the cancelled one left behind: it only succeeds if the cancel
/// left the device usable.
final class USBCancelTests: XCTestCase {
    /// Little left: the rest of the download goes out as zeros, the device is back in its command
    /// phase without a reset, `flash` is never sent, and the next flashctl continues the same
    /// session.
    func testCancelWithLittleLeftPadsTheDownloadAndTheNextFlashUsesTheSameSession() throws {
        // 16 MiB at 4 MiB/s: about 4 s if nothing is cancelled.
        let emulator = try EmulatorProcess(serial: "USBCANCEL1", extraArguments: ["--speed-limit", "4M"])
        defer { emulator.stop() }
        let image = TestImages.random(16 << 20, seed: 11)
        let imagePath = try TestImages.write(image, name: "boot.img")
        let next = TestImages.random(1 << 20, seed: 12)
        let nextPath = try TestImages.write(next, name: "boot.img")

        let run = try TwoFlashTestbedRun(device: emulator.usbDevice(), serial: "USBCANCEL1", first: imagePath, second: nextPath)
        defer { run.stop() }

        // Half acknowledged: with at most half left, the rest is within the padding limit (two
        // seconds at the rate so far, at least 4 MiB), and with several MiB still to read the
        // cancel reaches the stream before it has read the whole image.
        let cancelledAt = try run.interruptFirst(whenAcknowledged: { $0 >= image.count / 2 })
        let first = try run.waitForStep("first", timeout: 20)
        assertCancelled(first)
        XCTAssertNil(emulator.partition("boot"), "a cancelled flash must not write the partition")

        // Between the two runs: the emulated device is still in the session the cancelled run used
        // (no reset), and its download buffer (a temporary file in the partition folder, see
        // EmulatedFastbootSession) holds the image's start followed by zeros up to the full size.
        XCTAssertFalse(run.testbedLog.contains("USBDEVFS_RESET"), "padding must not need a reset:\n\(run.testbedLog)")
        let buffers = try FileManager.default.contentsOfDirectory(atPath: emulator.directory).filter { $0.hasPrefix(".download-") }
        XCTAssertEqual(buffers.count, 1, "the emulated device's download buffer: \(buffers)")
        if let name = buffers.first, let received = FileManager.default.contents(atPath: emulator.directory + "/" + name) {
            XCTAssertEqual(received.count, image.count, "the device must have received a whole download")
            let real = commonPrefixLength(received, image)
            XCTAssertGreaterThan(real, 0)
            XCTAssertLessThan(real, image.count, "no padding was sent: the cancel (at \(cancelledAt) bytes acknowledged) came after the last read")
            XCTAssertTrue(isZero(received.suffix(from: real)), "after the image's first \(real) bytes the download must be zeros")
        }

        run.proceed()
        let second = try run.waitForStep("second", timeout: 30)
        XCTAssertEqual(second.status, 0, second.stderr + second.stdout)
        XCTAssertEqual(second.events.last?["type"] as? String, "flash_completed", second.stdout)
        XCTAssertEqual(emulator.partition("boot"), next, "the partition must hold exactly the second image")
        XCTAssertEqual(try run.finish(timeout: 10), 0, run.testbedLog)
        XCTAssertEqual(run.testbedLog.components(separatedBy: ": connected to ").count - 1, 1,
                       "both flashctl runs must have used one TCP session:\n\(run.testbedLog)")
        XCTAssertFalse(run.testbedLog.contains("USBDEVFS_RESET"), run.testbedLog)
    }

    /// Much left: the transfer is broken off, flashctl resets the device (USBDEVFS_RESET, which
    /// drops the test bed's TCP link) and the next flashctl starts a fresh session.
    func testCancelWithMuchLeftResetsTheDeviceAndTheNextFlashSucceeds() throws {
        // 200 MiB in one download at 8 MiB/s: 25 s if nothing is cancelled, far more than 64 MiB
        // (the most a cancel pads with) left when it is.
        let emulator = try EmulatorProcess(serial: "USBCANCEL2", extraArguments: ["--speed-limit", "8M", "--max-download-size", "256M"])
        defer { emulator.stop() }
        let size = 200 << 20
        let imagePath = try TestImages.write(Data(), name: "boot.img")
        XCTAssertEqual(truncate(imagePath, off_t(size)), 0, "a sparse 200 MiB image")
        let next = TestImages.random(1 << 20, seed: 21)
        let nextPath = try TestImages.write(next, name: "boot.img")

        let run = try TwoFlashTestbedRun(device: emulator.usbDevice(), serial: "USBCANCEL2", first: imagePath, second: nextPath)
        defer { run.stop() }

        let cancelledAt = try run.interruptFirst(whenAcknowledged: { $0 > 0 })
        XCTAssertLessThan(cancelledAt, size - (64 << 20) - (4 << 20), "too little left to exercise the reset")
        let started = Date()
        let first = try run.waitForStep("first", timeout: 20)
        let seconds = Date().timeIntervalSince(started)
        assertCancelled(first)
        XCTAssertLessThan(seconds, 20, "a cancel with much left must end promptly, not finish the download")
        XCTAssertNil(emulator.partition("boot"), "a cancelled flash must not write the partition")
        XCTAssertTrue(run.testbedLog.contains("USBCANCEL2: USBDEVFS_RESET"), "flashctl must reset the device:\n\(run.testbedLog)")

        run.proceed()
        let second = try run.waitForStep("second", timeout: 30)
        XCTAssertEqual(second.status, 0, second.stderr + second.stdout)
        XCTAssertEqual(second.events.last?["type"] as? String, "flash_completed", second.stdout)
        XCTAssertEqual(emulator.partition("boot"), next, "the partition must hold exactly the second image")
        XCTAssertEqual(try run.finish(timeout: 10), 0, run.testbedLog)
        XCTAssertEqual(run.testbedLog.components(separatedBy: ": connected to ").count - 1, 2,
                       "the reset must end the first TCP session and the next transfer open another:\n\(run.testbedLog)")
        print("USBCancelTests: cancel with much left ended \(String(format: "%.2f", seconds)) s after SIGINT")
    }

    /// A device that takes no data for a while (here: so slow that one 1 MiB transfer takes 16 s):
    /// Ctrl-C gives the waiting transfers up at once, not at their timeout, resets the device, and
    /// the next flash works.
    func testCancelWhileTheDeviceTakesNoDataEndsPromptlyAndResetsIt() throws {
        let emulator = try EmulatorProcess(serial: "USBCANCEL4", extraArguments: ["--speed-limit", "64K"])
        defer { emulator.stop() }
        let imagePath = try TestImages.write(TestImages.random(32 << 20, seed: 41), name: "boot.img")
        let next = TestImages.random(128 << 10, seed: 42)
        let nextPath = try TestImages.write(next, name: "boot.img")
        let run = try TwoFlashTestbedRun(device: emulator.usbDevice(), serial: "USBCANCEL4", first: imagePath, second: nextPath)
        defer { run.stop() }

        // The download has begun and its first transfer waits (the timeout is 10 s).
        _ = try run.interruptFirst(whenAcknowledged: { $0 >= 0 }, thenWait: 2)
        let started = Date()
        let first = try run.waitForStep("first", timeout: 20)
        let seconds = Date().timeIntervalSince(started)
        assertCancelled(first)
        XCTAssertLessThan(seconds, 5, "the cancel must not wait for the stalled transfers' 10 s timeout")
        XCTAssertTrue(run.testbedLog.contains("USBCANCEL4: USBDEVFS_RESET"), "flashctl must reset the device:\n\(run.testbedLog)")
        XCTAssertNil(emulator.partition("boot"))

        run.proceed()
        let second = try run.waitForStep("second", timeout: 30)
        XCTAssertEqual(second.status, 0, second.stderr + second.stdout)
        XCTAssertEqual(emulator.partition("boot"), next)
        XCTAssertEqual(try run.finish(timeout: 10), 0, run.testbedLog)
    }

    /// A device busy writing a partition (here: one that never answers flash:boot) when the user
    /// cancels: the wait for its answer is given up within about half a second, not at the 120 s
    /// write timeout, and the device is reset so that its late answer cannot be taken for the
    /// next command's.
    func testCancelWhileTheDeviceWritesEndsPromptlyAndResetsIt() throws {
        let emulator = try EmulatorProcess(serial: "USBCANCEL5", extraArguments: ["--stall-on", "flash:boot"])
        defer { emulator.stop() }
        let image = TestImages.random(1 << 20, seed: 51)
        let imagePath = try TestImages.write(image, name: "boot.img")
        let next = TestImages.random(256 << 10, seed: 52)
        let nextPath = try TestImages.write(next, name: "recovery.img")
        let run = try TwoFlashTestbedRun(device: emulator.usbDevice(), serial: "USBCANCEL5", first: imagePath, second: nextPath)
        defer { run.stop() }

        // 1 MiB goes in milliseconds: two seconds after the first progress, flashctl waits for
        // flash:boot's answer.
        _ = try run.interruptFirst(whenAcknowledged: { $0 >= 0 }, thenWait: 2)
        let first = try run.waitForStep("first", timeout: 20)
        assertCancelled(first)
        XCTAssertLessThan(first.seconds, 3, "the cancel must not wait for the device's answer (write timeout 120 s)")
        XCTAssertTrue(run.testbedLog.contains("USBCANCEL5: USBDEVFS_RESET"), "flashctl must reset the device:\n\(run.testbedLog)")
        XCTAssertNil(emulator.partition("boot"))

        run.proceed()
        let second = try run.waitForStep("second", timeout: 30)
        XCTAssertEqual(second.status, 0, second.stderr + second.stdout)
        XCTAssertEqual(emulator.partition("recovery"), next)
        XCTAssertEqual(try run.finish(timeout: 10), 0, run.testbedLog)
    }

    /// The test bed itself: a flashctl killed outright (no padding, no reset) leaves the device in
    /// its download phase, and the next flashctl meets it there, as it would on real hardware: the
    /// device takes its commands as download data and never answers.
    func testADeviceLeftInItsDownloadPhaseStaysThereForTheNextClient() throws {
        let emulator = try EmulatorProcess(serial: "USBCANCEL3", extraArguments: ["--speed-limit", "4M"])
        defer { emulator.stop() }
        let imagePath = try TestImages.write(TestImages.random(16 << 20, seed: 31), name: "boot.img")
        let nextPath = try TestImages.write(TestImages.random(1 << 20, seed: 32), name: "boot.img")

        let run = try TwoFlashTestbedRun(device: emulator.usbDevice(), serial: "USBCANCEL3", first: imagePath, second: nextPath,
                                         secondOptions: ["--command-timeout", "2"])
        defer { run.stop() }
        _ = try run.interruptFirst(signal: SIGKILL, whenAcknowledged: { $0 > 0 })
        let first = try run.waitForStep("first", timeout: 10)
        XCTAssertNotEqual(first.status, 0)
        // The kernel releases a killed process's claim when its file closes; the test bed (umockdev)
        // notices the closed socket up to a few hundred ms later, so wait for that as a real
        // process exit would have done it.
        XCTAssertTrue(run.waitForLog("USBCANCEL3: client closed the device", timeout: 5), run.testbedLog)

        run.proceed()
        let second = try run.waitForStep("second", timeout: 20)
        XCTAssertNotEqual(second.status, 0, "the device was still receiving the first download: \(second.stdout)")
        let error = second.events(ofType: "flash_failed").first?["error"] as? String ?? ""
        XCTAssertTrue(error.contains("did not answer"), "\(error)\n\(second.stderr)")
        XCTAssertNil(emulator.partition("boot"))
        XCTAssertEqual(try run.finish(timeout: 10), 0, run.testbedLog)
        XCTAssertEqual(run.testbedLog.components(separatedBy: ": connected to ").count - 1, 1, run.testbedLog)
    }

    private func assertCancelled(_ result: CommandResult, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNotEqual(result.status, 0, "a cancelled flash exits with a failure status", file: file, line: line)
        let last = result.events.last
        XCTAssertEqual(last?["type"] as? String, "flash_failed", result.stdout + result.stderr, file: file, line: line)
        XCTAssertEqual(last?["reason"] as? String, "cancelled", result.stdout, file: file, line: line)
        XCTAssertTrue((last?["error"] as? String)?.lowercased().contains("cancel") == true, result.stdout, file: file, line: line)
        XCTAssertEqual(result.events(ofType: "flash_completed").count, 0, result.stdout, file: file, line: line)
    }
}

/// Bytes at the start of `a` and `b` that are equal.
private func commonPrefixLength(_ a: Data, _ b: Data) -> Int {
    let count = min(a.count, b.count)
    return a.withUnsafeBytes { pa in
        b.withUnsafeBytes { pb in
            let block = 64 << 10
            var offset = 0
            while offset < count {
                let n = min(block, count - offset)
                if memcmp(pa.baseAddress! + offset, pb.baseAddress! + offset, n) != 0 {
                    var index = offset
                    while pa[index] == pb[index] { index += 1 }
                    return index
                }
                offset += n
            }
            return count
        }
    }
}

private func isZero(_ data: Data) -> Bool {
    data == Data(count: data.count)
}

/// One test bed run (with --debug) whose COMMAND is a shell script running two `flashctl flash`
/// one after the other against the same emulated USB device: the first runs at once, the second
/// once the test calls `proceed()`. Each step's stdout, stderr, pid and exit status land in files.
private final class TwoFlashTestbedRun {
    let directory: String
    private let process: Process
    private let logPath: String

    private static let script = #"""
        D="$1"; F="$2"; S="$3"; FIRST="$4"; SECOND="$5"; shift 5
        step() {
            name=$1; shift
            /bin/sh -c 'echo $$ > "$0.pid"; exec "$@"' "$D/$name" "$@" > "$D/$name.out" 2> "$D/$name.err"
            echo $? > "$D/$name.status.tmp"; mv "$D/$name.status.tmp" "$D/$name.status"
        }
        step first "$F" flash --device "$S" "$FIRST" --json
        while [ ! -e "$D/proceed" ]; do sleep 0.02; done
        step second "$F" flash --device "$S" "$SECOND" --json "$@"
        """#

    init(device: String, serial: String, first: String, second: String, secondOptions: [String] = []) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-cancel-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        logPath = directory + "/testbed.err"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        _ = FileManager.default.createFile(atPath: directory + "/testbed.out", contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [ProcessRunner.usbTestbed, "--debug", "--device", device, "--",
                             "/bin/sh", "-c", Self.script, "sh", directory, ProcessRunner.flashctl, serial, first, second] + secondOptions
        process.standardOutput = FileHandle(forWritingAtPath: directory + "/testbed.out")
        process.standardError = FileHandle(forWritingAtPath: logPath)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// What the test bed logged so far (--debug: connections, resets, every ioctl).
    var testbedLog: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    /// Waits for a `flash_progress` line of the first flash whose bytesTransferred satisfies
    /// `condition`, then sends `signal` to that flashctl process (as Ctrl-C in a terminal would:
    /// the test bed itself ignores SIGINT). Returns the bytesTransferred seen.
    func interruptFirst(signal: Int32 = SIGINT, whenAcknowledged condition: (Int) -> Bool, thenWait delay: Double = 0, timeout: Double = 20,
                        file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let status = self.status(of: "first") {
                throw failure("the first flash ended (status \(status)) before it could be interrupted: \(read("first.out")) \(read("first.err"))")
            }
            let progress = completeLines(read("first.out")).filter { $0["type"] as? String == "flash_progress" }
            if let hit = progress.compactMap({ $0["bytesTransferred"] as? Int }).first(where: condition) {
                guard let pid = Int32(read("first.pid").trimmingCharacters(in: .whitespacesAndNewlines)) else {
                    throw failure("no pid for the first flash")
                }
                if delay > 0 { usleep(UInt32(delay * 1_000_000)) }
                XCTAssertEqual(kill(pid, signal), 0, "kill \(pid)", file: file, line: line)
                return hit
            }
            guard process.isRunning else { throw failure("the test bed ended early: \(testbedLog)") }
            usleep(10_000)
        }
        throw failure("no matching progress within \(timeout) s: \(read("first.out")) \(read("first.err")) \(testbedLog)")
    }

    /// Waits for a step's exit status and returns what it printed.
    func waitForStep(_ name: String, timeout: Double) throws -> CommandResult {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            if let status = status(of: name) {
                return CommandResult(status: status, stdout: read("\(name).out"), stderr: read("\(name).err"),
                                     seconds: Date().timeIntervalSince(start))
            }
            guard process.isRunning else { throw failure("the test bed ended before step \(name) did: \(testbedLog)") }
            usleep(20_000)
        }
        throw failure("flashctl (step \(name)) hung for \(timeout) s: \(read("\(name).out")) \(read("\(name).err"))")
    }

    /// Waits until the test bed's debug log holds `text`; false on timeout.
    func waitForLog(_ text: String, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if testbedLog.contains(text) { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }

    /// Lets the script start the second flash.
    func proceed() {
        _ = FileManager.default.createFile(atPath: directory + "/proceed", contents: nil)
    }

    /// Waits for the test bed to end; returns its exit status.
    func finish(timeout: Double) throws -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        guard !process.isRunning else { throw failure("the test bed did not end within \(timeout) s") }
        return process.terminationStatus
    }

    /// Ends whatever still runs (the test bed, its shell and flashctl) and removes the files.
    func stop() {
        if process.isRunning {
            for pid in descendants(of: process.processIdentifier) { kill(pid, SIGKILL) }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func status(of step: String) -> Int32? {
        Int32(read("\(step).status").trimmingCharacters(in: .whitespacesAndNewlines))
    }

    private func read(_ name: String) -> String {
        (try? String(contentsOfFile: directory + "/" + name, encoding: .utf8)) ?? ""
    }

    private func completeLines(_ text: String) -> [[String: Any]] {
        guard let end = text.lastIndex(of: "\n") else { return [] }
        return text[..<end].split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }
    }

    private func failure(_ message: String) -> NSError {
        NSError(domain: "USBCancelTests", code: 1, userInfo: [NSLocalizedDescriptionKey: message])
    }

    /// Every process below `root`, children after their parents (from /proc/PID/stat).
    private func descendants(of root: Int32) -> [Int32] {
        var parents: [Int32: Int32] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let ppid = Int32(fields[1]) { parents[pid] = ppid }
        }
        var found: [Int32] = []
        var frontier = [root]
        while let parent = frontier.popLast() {
            let children = parents.filter { $0.value == parent }.map(\.key)
            found += children
            frontier += children
        }
        return found
    }
}
