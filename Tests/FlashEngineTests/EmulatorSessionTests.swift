import FlashEngine
import Foundation
import XCTest

/// The emulated device's logic fed frames directly, with no socket in between.
final class EmulatorSessionTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("emu-session-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func session(maxDownload: Int64 = 1 << 20, speedLimit: Int64 = 0, faults: EmulatedFaults = EmulatedFaults(), slotted: Bool = false,
                         device: EmulatedDeviceState? = nil, clock: any FlashClock = SystemClock(), sleep: @escaping (UInt64) -> Void = { _ in }) -> EmulatedFastbootSession {
        let config = EmulatedDeviceConfig(directory: directory, serial: "UNIT1", product: "unitboard", maxDownloadSize: maxDownload, speedLimit: speedLimit, faults: faults, slotted: slotted)
        return EmulatedFastbootSession(config: config, device: device, clock: clock, sleep: sleep)
    }

    private func send(_ session: EmulatedFastbootSession, _ command: String) -> [String] {
        send(session, Array(command.utf8))
    }

    private func send(_ session: EmulatedFastbootSession, _ frame: [UInt8]) -> [String] {
        session.receiveFrame(frame).map { action in
            switch action {
            case .reply(let packet): return String(decoding: packet, as: UTF8.self)
            case .stall: return "<stall>"
            case .disconnect: return "<disconnect>"
            case .stopReading: return "<stop reading>"
            case .reboot: return "<reboot>"
            }
        }
    }

    private func partition(_ name: String) -> Data? {
        FileManager.default.contents(atPath: directory + "/\(name).img")
    }

    private func leftovers() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasPrefix(".") }
    }

    func testVariables() {
        let device = session(maxDownload: 256 << 20)
        XCTAssertEqual(send(device, "getvar:product"), ["OKAYunitboard"])
        XCTAssertEqual(send(device, "getvar:serialno"), ["OKAYUNIT1"])
        XCTAssertEqual(send(device, "getvar:version"), ["OKAY0.4"])
        XCTAssertEqual(send(device, "getvar:max-download-size"), ["OKAY0x10000000"])
        XCTAssertEqual(send(device, "getvar:has-slot:boot"), ["OKAYno"])
        XCTAssertEqual(send(device, "getvar:is-logical:system"), ["OKAYno"])
        XCTAssertEqual(send(device, "getvar:partition-size:boot"), ["FAILunknown variable"])
        XCTAssertEqual(send(device, "getvar:current-slot"), ["FAILunknown variable"])
        XCTAssertEqual(send(device, "getvar:bogus"), ["FAILunknown variable"])
        _ = FileManager.default.createFile(atPath: directory + "/boot.img", contents: Data(count: 0x1234))
        XCTAssertEqual(send(device, "getvar:partition-size:boot"), ["OKAY0x00001234"])
        XCTAssertEqual(send(device, "getvar:partition-type:boot"), ["OKAYraw"])
        let all = send(device, "getvar:all")
        XCTAssertEqual(all.last, "OKAY")
        XCTAssertTrue(all.dropLast().allSatisfy { $0.hasPrefix("INFO") }, "\(all)")
        XCTAssertTrue(all.contains("INFOproduct:unitboard"), "\(all)")
        XCTAssertTrue(all.contains("INFOpartition-size:boot:0x00001234"), "\(all)")
    }

    func testSlotsLockAndTheTwoFastbootsLastAcrossReboots() {
        let state = EmulatedDeviceState(slotted: true)
        var device = session(slotted: true, device: state)
        XCTAssertEqual(send(device, "getvar:slot-count"), ["OKAY2"])
        XCTAssertEqual(send(device, "getvar:current-slot"), ["OKAYa"])
        XCTAssertEqual(send(device, "getvar:has-slot:boot"), ["OKAYyes"])
        XCTAssertEqual(send(device, "getvar:has-slot:userdata"), ["OKAYno"])
        XCTAssertEqual(send(device, "getvar:version-bootloader"), ["OKAYemu-bootloader-1.0"])
        XCTAssertEqual(send(device, "set_active:c"), ["FAILno slot 'c': slots are a and b"])
        XCTAssertEqual(send(device, "set_active:b"), ["OKAY"])
        XCTAssertEqual(send(device, "getvar:current-slot"), ["OKAYb"])

        XCTAssertEqual(send(device, "flashing lock"), ["OKAY"])
        XCTAssertEqual(send(device, "getvar:unlocked"), ["OKAYno"])
        XCTAssertEqual(send(device, "erase:boot_b"), ["FAILFlashing is not allowed in Lock State"])
        XCTAssertEqual(send(device, "flashing unlock"), ["OKAY"])
        XCTAssertEqual(send(device, "oem device-info"), ["INFODevice unlocked: true", "INFOCurrent slot: b", "OKAY"])
        XCTAssertEqual(send(device, "oem bogus"), ["FAILunknown oem command 'bogus'"])

        // Logical partitions are made in fastbootd, which a reboot reaches; the state survives it.
        XCTAssertEqual(send(device, "create-logical-partition:system_b:4096"), ["FAILlogical partitions are changed from fastbootd (reboot fastboot)"])
        XCTAssertEqual(send(device, "reboot-fastboot"), ["OKAY", "<reboot>"])
        device = session(slotted: true, device: state)
        XCTAssertEqual(send(device, "getvar:is-userspace"), ["OKAYyes"])
        XCTAssertEqual(send(device, "getvar:current-slot"), ["OKAYb"])
        XCTAssertEqual(send(device, "create-logical-partition:system_b:4096"), ["OKAY"])
        XCTAssertEqual(send(device, "getvar:is-logical:system_b"), ["OKAYyes"])
        XCTAssertEqual(send(device, "getvar:partition-size:system_b"), ["OKAY0x00001000"])
        XCTAssertEqual(send(device, "download:00002000"), ["DATA00002000"])
        XCTAssertEqual(send(device, [UInt8](repeating: 7, count: 0x2000)), ["OKAY"])
        XCTAssertEqual(send(device, "flash:system_b"), ["FAIL'system_b' holds 4096 bytes, the image 8192: resize it first"])
        XCTAssertEqual(send(device, "resize-logical-partition:system_b:8192"), ["OKAY"])
        XCTAssertEqual(send(device, "flash:system_b"), ["INFOwriting 'system_b'...", "OKAY"])
        XCTAssertEqual(partition("system_b"), Data(repeating: 7, count: 0x2000))
        XCTAssertEqual(send(device, "reboot-bootloader"), ["OKAY", "<reboot>"])
        device = session(slotted: true, device: state)
        XCTAssertEqual(send(device, "getvar:is-userspace"), ["OKAYno"])
        XCTAssertEqual(send(device, "download:00000010"), ["DATA00000010"])
        XCTAssertEqual(send(device, [UInt8](repeating: 1, count: 16)), ["OKAY"])
        XCTAssertEqual(send(device, "flash:system_b"), ["FAIL'system_b' is a logical partition: flash it from fastbootd (reboot fastboot)"])
        XCTAssertEqual(send(device, "boot"), ["OKAY", "<reboot>"])
        XCTAssertEqual(FileManager.default.contents(atPath: directory + "/.ram-boot.img"), Data(repeating: 1, count: 16))
        XCTAssertEqual(state.reboots, 3)
    }

    func testDownloadInOddFramesThenFlash() {
        let device = session()
        let image = [UInt8](EmulatorTestData.random(10_000, seed: 1))
        XCTAssertEqual(send(device, "download:00002710"), ["DATA00002710"])
        XCTAssertTrue(device.isReceivingData)
        var offset = 0
        for size in [1, 4095, 3, 5000] {
            XCTAssertEqual(send(device, Array(image[offset..<offset + size])), [])
            offset += size
        }
        XCTAssertEqual(device.bytesStillExpected, Int64(image.count - offset))
        XCTAssertEqual(send(device, Array(image[offset...])), ["OKAY"])
        XCTAssertFalse(device.isReceivingData)
        XCTAssertEqual(send(device, "flash:boot"), ["INFOwriting 'boot'...", "OKAY"])
        XCTAssertEqual(partition("boot"), Data(image))
    }

    func testAFrameGoingPastTheAnnouncedSizeFailsAndEndsTheDownload() {
        let device = session()
        XCTAssertEqual(send(device, "download:00000010"), ["DATA00000010"])
        XCTAssertEqual(send(device, [UInt8](repeating: 1, count: 8)), [])
        let reply = send(device, [UInt8](repeating: 1, count: 9))
        XCTAssertEqual(reply.count, 1)
        XCTAssertTrue(reply[0].hasPrefix("FAIL"), "\(reply)")
        XCTAssertFalse(device.isReceivingData)
        XCTAssertEqual(send(device, "flash:boot"), ["FAILno data downloaded"])
    }

    func testCommandRules() {
        let device = session(maxDownload: 4096)
        XCTAssertEqual(send(device, "flash:boot"), ["FAILno data downloaded"])
        XCTAssertEqual(send(device, "download:00001001"), ["FAILdownload of 4097 bytes is larger than max-download-size (4096 bytes)"])
        XCTAssertEqual(send(device, "download:0000000g"), ["FAILbad download size '0000000g'"])
        XCTAssertEqual(send(device, "download:00000000"), ["FAILbad download size '00000000'"])
        XCTAssertEqual(send(device, "oem unlock"), ["FAILunknown oem command 'unlock'"])
        XCTAssertEqual(send(device, "format:boot"), ["FAILunknown command"])
        XCTAssertEqual(send(device, "reboot"), ["OKAY", "<reboot>"])
        XCTAssertEqual(send(device, "reboot-bootloader"), ["OKAY", "<reboot>"])
        XCTAssertEqual(send(device, "continue"), ["OKAY", "<reboot>"])
        XCTAssertEqual(send(device, [UInt8](repeating: 65, count: EmulatedFastbootSession.maxCommandLength + 1)), ["FAILcommand too long"])
        XCTAssertEqual(send(device, []), [], "an empty packet is not a command")
        for name in ["../etc", "a/b", ".hidden", "", "sp ace"] {
            XCTAssertEqual(send(device, "download:00000004"), ["DATA00000004"])
            XCTAssertEqual(send(device, "abcd"), ["OKAY"])
            XCTAssertEqual(send(device, "flash:\(name)"), ["FAILbad partition name '\(name)'"], name)
            XCTAssertEqual(send(device, "erase:\(name)"), ["FAILbad partition name '\(name)'"], name)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory).filter { !$0.hasPrefix(".") }, [])
    }

    func testDataNotFlashedIsDiscardedByTheNextDownload() {
        let device = session()
        XCTAssertEqual(send(device, "download:00000008"), ["DATA00000008"])
        XCTAssertEqual(send(device, "AAAAAAAA"), ["OKAY"])
        XCTAssertEqual(send(device, "download:00000004"), ["DATA00000004"])
        XCTAssertEqual(send(device, "BBBB"), ["OKAY"])
        XCTAssertEqual(send(device, "flash:misc"), ["INFOwriting 'misc'...", "OKAY"])
        XCTAssertEqual(partition("misc"), Data("BBBB".utf8))
        // A download abandoned half-way leaves nothing to flash.
        XCTAssertEqual(send(device, "download:00000004"), ["DATA00000004"])
        XCTAssertEqual(send(device, "CC"), [])
        let reply = send(device, "getvar:product")
        XCTAssertTrue(reply.count == 1 && reply[0].hasPrefix("FAIL"), "still in the data phase, and too much data: \(reply)")
        XCTAssertEqual(send(device, "flash:misc"), ["FAILno data downloaded"])
        XCTAssertEqual(partition("misc"), Data("BBBB".utf8))
    }

    func testFlashOverwritesInPlaceAndEraseEmpties() throws {
        let device = session()
        let path = directory + "/userdata.img"
        _ = FileManager.default.createFile(atPath: path, contents: Data(repeating: 9, count: 50_000))
        XCTAssertEqual(send(device, "download:00000005"), ["DATA00000005"])
        XCTAssertEqual(send(device, "hello"), ["OKAY"])
        XCTAssertEqual(send(device, "flash:userdata"), ["INFOwriting 'userdata'...", "OKAY"])
        XCTAssertEqual(partition("userdata"), Data("hello".utf8))
        // The same download can be flashed again when it was copied.
        XCTAssertEqual(send(device, "flash:userdata"), ["INFOwriting 'userdata'...", "OKAY"])
        XCTAssertEqual(send(device, "erase:userdata"), ["OKAY"])
        XCTAssertEqual(partition("userdata"), Data())
        XCTAssertEqual(send(device, "erase:newpart"), ["OKAY"])
        XCTAssertEqual(partition("newpart"), Data())
    }

    func testSparseDownloadsAreExpandedAndPiecesAccumulate() {
        let device = session()
        let blockSize = 4096
        let rawBlock = [UInt8](EmulatorTestData.random(blockSize, seed: 4))
        // Piece 1: 4 blocks: RAW, FILL 0xDEADBEEF, DONT_CARE x2.
        var piece1 = SparseFormat.fileHeader(blockSize: UInt32(blockSize), totalBlocks: 4, totalChunks: 3)
        piece1 += SparseFormat.chunkHeader(type: SparseFormat.chunkTypeRaw, blocks: 1, totalSize: UInt32(12 + blockSize)) + rawBlock
        piece1 += SparseFormat.chunkHeader(type: SparseFormat.chunkTypeFill, blocks: 1, totalSize: 16) + [0xef, 0xbe, 0xad, 0xde]
        piece1 += SparseFormat.chunkHeader(type: SparseFormat.chunkTypeDontCare, blocks: 2, totalSize: 12)
        // Piece 2: same 4 blocks, DONT_CARE x3 then FILL 0x01010101.
        var piece2 = SparseFormat.fileHeader(blockSize: UInt32(blockSize), totalBlocks: 4, totalChunks: 2)
        piece2 += SparseFormat.chunkHeader(type: SparseFormat.chunkTypeDontCare, blocks: 3, totalSize: 12)
        piece2 += SparseFormat.chunkHeader(type: SparseFormat.chunkTypeFill, blocks: 1, totalSize: 16) + [1, 1, 1, 1]

        for piece in [piece1, piece2] {
            XCTAssertEqual(send(device, String(format: "download:%08x", piece.count)), [String(format: "DATA%08x", piece.count)])
            XCTAssertEqual(send(device, piece), ["OKAY"])
            XCTAssertEqual(send(device, "flash:system"), ["INFOwriting 'system'...", "OKAY"])
        }
        var expected = rawBlock
        for _ in 0..<(blockSize / 4) { expected += [0xef, 0xbe, 0xad, 0xde] }
        expected += [UInt8](repeating: 0, count: blockSize)
        expected += [UInt8](repeating: 1, count: blockSize)
        XCTAssertEqual(partition("system"), Data(expected))
    }

    func testACorruptSparseImageIsRefusedAndChangesNothing() {
        let device = session()
        _ = FileManager.default.createFile(atPath: directory + "/vendor.img", contents: Data("old".utf8))
        // Claims one RAW block but carries no data.
        let bad = SparseFormat.fileHeader(blockSize: 4096, totalBlocks: 1, totalChunks: 1)
            + SparseFormat.chunkHeader(type: SparseFormat.chunkTypeRaw, blocks: 1, totalSize: 12 + 4096)
        XCTAssertEqual(send(device, String(format: "download:%08x", bad.count)), [String(format: "DATA%08x", bad.count)])
        XCTAssertEqual(send(device, bad), ["OKAY"])
        let reply = send(device, "flash:vendor")
        XCTAssertEqual(reply.first, "INFOwriting 'vendor'...")
        XCTAssertEqual(reply.count, 2)
        XCTAssertTrue(reply.last?.hasPrefix("FAIL") ?? false, "\(reply)")
        XCTAssertEqual(partition("vendor"), Data("old".utf8))
    }

    func testInjectedFaults() {
        let faults = EmulatedFaults(failures: [.init(commandPrefix: "flash:boot", message: "locked")], stallPrefixes: ["erase:"], disconnectAfterBytes: 10)
        let device = session(faults: faults)
        XCTAssertEqual(send(device, "download:00000004"), ["DATA00000004"])
        XCTAssertEqual(send(device, "1234"), ["OKAY"])
        XCTAssertEqual(send(device, "flash:boot"), ["FAILlocked"])
        XCTAssertEqual(send(device, "flash:bootloader"), ["FAILlocked"], "a prefix match")
        XCTAssertEqual(send(device, "flash:recovery"), ["INFOwriting 'recovery'...", "OKAY"])
        XCTAssertEqual(send(device, "download:00000008"), ["DATA00000008"])
        XCTAssertEqual(send(device, "12345"), [])
        XCTAssertEqual(send(device, "678"), ["<disconnect>"], "10 bytes in this connection")
        XCTAssertNil(partition("boot"))

        let staller = session(faults: faults)
        XCTAssertEqual(send(staller, "erase:boot"), ["<stall>"])
        XCTAssertTrue(staller.isStalled)
        XCTAssertEqual(send(staller, "getvar:product"), [], "a stalled device answers nothing")
    }

    func testAStopReadingFaultTakesTheBytesUpToItsLimitThenNothing() {
        let device = session(faults: EmulatedFaults(stopReadingAfterBytes: 6))
        XCTAssertEqual(send(device, "download:00000008"), ["DATA00000008"])
        XCTAssertEqual(send(device, "1234"), [])
        XCTAssertEqual(send(device, "5678"), ["<stop reading>"], "6 bytes in this connection")
        XCTAssertTrue(device.isStalled)
        XCTAssertEqual(send(device, "getvar:product"), [])
        XCTAssertNil(partition("boot"))
    }

    func testSpeedLimitTakesBytesAtItsPaceAndAPauseBanksOnlyOneChunk() {
        final class FakeClock: FlashClock, @unchecked Sendable {
            var now: UInt64 = 1_000_000_000
            func monotonicNanos() -> UInt64 { now }
            func epochMillis() -> Int64 { 0 }
        }
        let clock = FakeClock()
        var slept: [UInt64] = []
        let device = session(speedLimit: 1_000_000, clock: clock, sleep: { nanos in
            slept.append(nanos)
            clock.now += nanos
        })
        XCTAssertEqual(device.preferredDataChunk, 20_000)
        let chunk = [UInt8](repeating: 0, count: 20_000)
        XCTAssertEqual(send(device, "download:0001d4c0"), ["DATA0001d4c0"])
        for _ in 0..<3 { XCTAssertEqual(send(device, chunk), []) }
        // One chunk goes at once, each next one is due 20 ms later (20,000 bytes at 1 MB/s).
        XCTAssertEqual(slept, [20_000_000, 20_000_000])
        // A host that pauses for 10 s gets one chunk at once after it, then the same pace: a
        // pause banks no credit for a burst.
        clock.now += 10_000_000_000
        slept = []
        XCTAssertEqual(send(device, chunk), [])
        XCTAssertEqual(send(device, chunk), [])
        XCTAssertEqual(send(device, chunk), ["OKAY"])
        XCTAssertEqual(slept, [20_000_000, 20_000_000])
    }

    func testTheDownloadFileIsRemovedWhenTheSessionEnds() {
        var device: EmulatedFastbootSession? = session()
        XCTAssertEqual(send(device!, "download:00000004"), ["DATA00000004"])
        XCTAssertEqual(send(device!, "data"), ["OKAY"])
        XCTAssertEqual(leftovers().count, 1)
        device = nil
        XCTAssertEqual(leftovers(), [])
    }
}
