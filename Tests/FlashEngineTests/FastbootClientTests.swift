@testable import FlashEngine
import XCTest

final class FastbootClientTests: XCTestCase {
    func testGetvarReturnsTheOkayPayload() throws {
        let transport = ScriptedTransport(answers: ["OKAY0x10000000"])
        let client = FastbootClient(transport: transport)
        XCTAssertEqual(try client.getvar("max-download-size"), "0x10000000")
        XCTAssertEqual(transport.commands, ["getvar:max-download-size"])
    }

    func testInfoAndTextReachTheUserAndFailCarriesTheDeviceMessage() throws {
        let transport = ScriptedTransport(answers: ["INFOerasing userdata", "TEXTpart one ", "TEXTdone\n", "FAILpartition is locked"])
        var messages: [String] = []
        let client = FastbootClient(transport: transport) { messages.append($0) }
        XCTAssertThrowsError(try client.flash(partition: "userdata")) { error in
            let error = error as! FlashError
            XCTAssertEqual(error.kind, .deviceFailed)
            XCTAssertTrue(error.message.contains("partition is locked"), error.message)
            XCTAssertTrue(error.message.contains("flash:userdata"), error.message)
        }
        XCTAssertEqual(messages, ["erasing userdata", "part one done"])
    }

    func testDownloadSendsTheAnnouncedSizeAndCountsAcknowledgedBytes() throws {
        let payload = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let transport = ScriptedTransport(answers: ["DATA002dc6c0", "OKAY"])
        let client = FastbootClient(transport: transport)
        var acknowledged: [Int64] = []
        try client.download(ArrayStream(payload), size: Int64(payload.count)) { acknowledged.append($0) }
        XCTAssertEqual(transport.commands, ["download:002dc6c0"])
        XCTAssertEqual(transport.downloaded, payload)
        XCTAssertEqual(acknowledged.last, Int64(payload.count))
        XCTAssertEqual(acknowledged, acknowledged.sorted())
    }

    func testDownloadDataGoesOutWithTheDefaultSliceAndCommandsWithTheOneAskedFor() throws {
        defer { ThreadTimeSlice.request(0) }
        ThreadTimeSlice.request(0)
        let defaultSlice = ThreadTimeSlice.current
        let transport = ScriptedTransport(answers: ["DATA00000400", "OKAY", "OKAY"])
        let client = FastbootClient(transport: transport)
        let granted = ThreadTimeSlice.request(ThreadTimeSlice.responsive) && ThreadTimeSlice.current == ThreadTimeSlice.responsive
            && defaultSlice != ThreadTimeSlice.responsive
        try client.download(ArrayStream([UInt8](repeating: 7, count: 1024)), size: 1024) { _ in }
        try client.flash(partition: "boot")
        XCTAssertEqual(transport.downloaded.count, 1024)
        if granted {
            // Linux 6.12 or later: the kernel keeps a thread's own slice.
            XCTAssertEqual(transport.slicesAtCommands, [ThreadTimeSlice.responsive, ThreadTimeSlice.responsive])
            XCTAssertEqual(transport.sliceDuringData, defaultSlice, "bulk data must not run ahead of the threads writing to dashboards")
            XCTAssertEqual(ThreadTimeSlice.current, ThreadTimeSlice.responsive, "the slice asked for is back after the data")
        } else {
            // A kernel without per-thread slices: nothing is asked of it, and the flash still works.
            XCTAssertEqual(transport.sliceDuringData, ThreadTimeSlice.current)
        }
    }

    func testDownloadRefusesADeviceThatOffersAnotherSize() {
        let transport = ScriptedTransport(answers: ["DATA00000010"])
        let client = FastbootClient(transport: transport)
        XCTAssertThrowsError(try client.download(ArrayStream([1, 2, 3]), size: 3) { _ in }) { error in
            XCTAssertEqual((error as! FlashError).kind, .protocolViolation)
        }
        XCTAssertTrue(transport.downloaded.isEmpty)
    }

    func testGarbageFromTheDeviceIsAProtocolErrorNotACrash() {
        for answer in ["OK", "DATAzzzzzzzz", "HELLO world", "\u{1}\u{2}\u{3}\u{4}\u{5}"] {
            let client = FastbootClient(transport: ScriptedTransport(answers: [answer]))
            XCTAssertThrowsError(try client.getvar("product"), answer) { error in
                XCTAssertEqual((error as! FlashError).kind, .protocolViolation, answer)
            }
        }
    }

    func testSilenceIsATimeoutNamingTheCommand() {
        let client = FastbootClient(transport: ScriptedTransport(answers: []), timeouts: FastbootTimeouts(commandMs: 1000))
        XCTAssertThrowsError(try client.getvar("product")) { error in
            let error = error as! FlashError
            XCTAssertEqual(error.kind, .timeout)
            XCTAssertTrue(error.message.contains("getvar:product"), error.message)
        }
    }
}
