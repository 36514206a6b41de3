import FlashEngine
import Foundation
import XCTest

/// What a new user reads from the real `flashctl` binary: the version, errors, help and the
/// messages that must agree with each other.
final class CommandLineMessagesTests: XCTestCase {
    private var servers: [ServeProcess] = []

    override func tearDown() {
        servers.forEach { $0.removeFiles() }
        servers = []
    }

    private func flashctl(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 60) throws -> CommandResult {
        try ProcessRunner.run(ProcessRunner.flashctl, arguments, timeout: timeout, environment: environment)
    }

    private func serve(_ arguments: [String]) throws -> ServeProcess {
        let server = try ServeProcess(arguments: arguments)
        servers.append(server)
        return server
    }

    func testVersionNamesTheVersionFileAndTheCommitOfTheCheckout() throws {
        let root = ProcessRunner.packageRoot
        let version = try String(contentsOfFile: root + "/VERSION", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let git = try ProcessRunner.run("/usr/bin/git", ["-C", root, "describe", "--always", "--dirty", "--abbrev=12", "--exclude=*"])
        XCTAssertEqual(git.status, 0, git.stderr)
        let commit = git.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let result = try flashctl(["--version"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.stdout, "\(version) (commit \(commit))\n")
    }

    func testARunningEmulatorIsFlashedBySerialAsDevicesListsIt() throws {
        let emulator = try EmulatorProcess(serial: "EMUBYSERIAL")
        defer { emulator.stop() }
        let devices = try flashctl(["devices"])
        XCTAssertTrue(devices.stdout.contains("EMUBYSERIAL"), devices.stdout)
        let image = TestImages.random(1 << 20 + 7)
        let path = try TestImages.write(image, name: "boot.img")
        let result = try flashctl(["flash", "-d", "EMUBYSERIAL", path, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(emulator.partition("boot"), image)
    }

    func testServeOnABusyPortNamesTheAddressAndSuggestsPort() throws {
        let taken = try POSIXSocket.listen(host: "127.0.0.1", port: 0)
        defer { taken.close() }
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-busy-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let result = try flashctl(["serve", "-p", "\(taken.localPort)", "--images", base, "--history", base + "/history.sqlite"], timeout: 30)
        XCTAssertEqual(result.status, 1, result.stderr)
        XCTAssertTrue(result.stderr.contains("flashctl: error: cannot listen on 127.0.0.1:\(taken.localPort): the address is already in use"), result.stderr)
        XCTAssertTrue(result.stderr.contains("--port"), result.stderr)
        XCTAssertFalse(result.stderr.contains("Usage:"), result.stderr)
    }

    func testRunTimeErrorsHaveNoUsageLineButUsageMistakesDo() throws {
        let missing = try flashctl(["flash", "--device", "tcp:127.0.0.1:1", "/nonexistent/boot.img"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.hasPrefix("flashctl: error: "), missing.stderr)
        XCTAssertTrue(missing.stderr.contains("/nonexistent/boot.img"), missing.stderr)
        XCTAssertFalse(missing.stderr.contains("Usage:"), missing.stderr)

        let typo = try flashctl(["flash", "--devcie", "x", "boot.img"])
        XCTAssertEqual(typo.status, 64)
        XCTAssertTrue(typo.stderr.contains("Usage: flashctl flash"), typo.stderr)
    }

    func testFlashSendsJobsToFlashctlServerLikeTheJobCommands() throws {
        let server = try serve(["--emulate", "1"])
        let image = TestImages.random(1 << 20)
        try server.write(image: "boot.img", image)
        let result = try flashctl(["flash", "--device", "EMU1", "boot.img", "--json"], environment: ["FLASHCTL_SERVER": server.url])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.events.last?["type"] as? String, "flash_completed", result.stdout)
        let jobs = try flashctl(["jobs", "--json"], environment: ["FLASHCTL_SERVER": server.url])
        XCTAssertTrue(jobs.stdout.contains(result.events.last?["jobId"] as? String ?? "no job"), jobs.stdout)
        let noDevice = try flashctl(["flash", "boot.img"], environment: ["FLASHCTL_SERVER": server.url])
        XCTAssertNotEqual(noDevice.status, 0)
        XCTAssertTrue(noDevice.stderr.contains("flashing through $FLASHCTL_SERVER (\(server.url)) needs --device (-d)"), noDevice.stderr)
    }

    func testJSONShowsPathsWithUnescapedSlashes() throws {
        let server = try serve(["--emulate", "1"])
        try server.write(image: "boot.img", TestImages.random(1 << 16))
        let images = try ProcessRunner.run("/usr/bin/curl", ["-sS", server.url + "/api/images"])
        XCTAssertTrue(images.stdout.contains(#""directory":"\#(server.images)""#), images.stdout)
        XCTAssertFalse(images.stdout.contains(#"\/"#), images.stdout)
        XCTAssertEqual(try flashctl(["flash", "--server", server.url, "-d", "EMU1", "boot.img", "--json"]).status, 0)
        let history = try flashctl(["history", "--history", server.history, "--json"])
        XCTAssertTrue(history.stdout.contains(#"/boot.img""#), history.stdout)
        XCTAssertFalse(history.stdout.contains(#"\/"#), history.stdout)
    }

    func testServeHelpStatesTheRulesNotThisMachinesValues() throws {
        // Help is wrapped to the terminal's width: compare with the line breaks taken out.
        let help = try flashctl(["serve", "--help"]).stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        XCTAssertTrue(help.contains("$XDG_STATE_HOME/flashctl/history.sqlite, else ~/.local/state/flashctl/history.sqlite"), help)
        XCTAssertTrue(help.contains("$XDG_DATA_HOME/flashctl/images, else ~/.local/share/flashctl/images"), help)
        XCTAssertTrue(help.contains("half the number of cores"), help)
        let home = FileManager.default.homeDirectoryForCurrentUser.path
        XCTAssertFalse(help.contains(home + "/.local"), help)
        XCTAssertFalse(help.contains("(default: \(max(1, ProcessInfo.processInfo.activeProcessorCount / 2)))"), help)
        XCTAssertTrue(help.contains("-p, --port"), help)
    }

    func testSizesAndSpeedsAreBinaryUnitsAndAmbiguousMBIsRefused() throws {
        let refused = try flashctl(["emulate", "--dir", NSTemporaryDirectory(), "--speed-limit", "40MB"])
        XCTAssertEqual(refused.status, 64)
        XCTAssertTrue(refused.stderr.contains("The value '40MB' is invalid for '--speed-limit"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("K, M, G are binary units") || refused.stderr.contains("= 40 MiB/s"), refused.stderr)

        // On a terminal (script(1) gives one) the summary reads MiB and MiB/s, as the dashboard does.
        let emulator = try EmulatorProcess(serial: "EMUUNITS", extraArguments: ["--speed-limit", "4MiB"])
        defer { emulator.stop() }
        let path = try TestImages.write(TestImages.random(2 << 20), name: "boot.img")
        let shown = try ProcessRunner.run("/usr/bin/script", ["-qec", "\(ProcessRunner.flashctl) flash -d \(emulator.tcpSelector) \(path)", "/dev/null"])
        XCTAssertEqual(shown.status, 0, shown.stdout)
        XCTAssertNotNil(shown.stdout.range(of: #"Done: 2\.0 MiB in [0-9.]+s \([0-9.]+ MiB/s average\)"#, options: .regularExpression), shown.stdout)
    }
}
