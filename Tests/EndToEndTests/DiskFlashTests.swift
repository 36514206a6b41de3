import Foundation
import XCTest

/// `flashctl flash --device /dev/loopN`: images made by the real tools, written to real block
/// devices (loop devices), with what lands on the device compared to the source.
final class DiskFlashTests: XCTestCase {
    private var work = ""
    private var loops: [LoopDevice] = []

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-disk-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    }

    override func tearDown() {
        loops.forEach { $0.detach() }
        try? FileManager.default.removeItem(atPath: work)
    }

    private func loop(_ size: Int, fill: UInt8 = 0) throws -> LoopDevice {
        let device = try LoopDevice(size: size, fill: fill)
        loops.append(device)
        return device
    }

    private func flash(_ arguments: [String], timeout: Double = 120) throws -> CommandResult {
        try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--json"] + arguments, timeout: timeout)
    }

    private func source(_ size: Int = 6 << 20 + 4096 * 3) throws -> (data: Data, path: String) {
        let data = DiskImages.withHoles(size)
        let path = work + "/os.img"
        try data.write(to: URL(fileURLWithPath: path))
        return (data, path)
    }

    func testEveryCompressedAndSparseFormatLandsByteForByte() throws {
        let (data, _) = try source()
        let imageSHA256 = try DiskImages.sha256(work + "/os.img")
        try DiskImages.tool("gzip -k -1 os.img && xz -k -1 -T1 os.img && zstd -q -1 os.img && bzip2 -k -1 os.img && zip -q os.zip os.img && img2simg os.img os.simg && xz -k -1 -T1 os.simg && zstd -q -1 os.simg", in: work)
        for name in ["os.img", "os.img.gz", "os.img.xz", "os.img.zst", "os.img.bz2", "os.zip", "os.simg", "os.simg.xz", "os.simg.zst"] {
            let device = try loop(8 << 20)
            let result = try flash(["--device", device.path, "--yes", work + "/" + name])
            XCTAssertEqual(result.status, 0, "\(name): \(result.stderr)")
            XCTAssertEqual(result.events.last?["type"] as? String, "flash_completed", name)
            XCTAssertEqual(result.events.last?["verified"] as? Bool, true, name)
            XCTAssertEqual(result.events.last?["target"] as? String, "disk", name)
            if !name.contains("simg") {
                XCTAssertEqual(result.events.last?["sha256"] as? String, imageSHA256, "\(name): the SHA-256 of what was written")
            }
            XCTAssertEqual(try device.contents().prefix(data.count), data, "\(name): the device does not hold the image")
            let stages = result.events(ofType: "flash_progress").compactMap(\.stageName)
            XCTAssertTrue(stages.contains("Writing") && stages.contains("Verifying"), "\(name): stages \(Set(stages))")
            let progress = result.events(ofType: "flash_progress").compactMap { $0["progress"] as? Double }
            XCTAssertEqual(progress, progress.sorted(), "\(name): progress went backwards")
            // Two weighted passes over the image's bytes, never the image's size twice.
            let totals = Set(result.events(ofType: "flash_progress").compactMap { $0["totalBytes"] as? Int }.dropLast())
            XCTAssertTrue(totals.allSatisfy { $0 <= data.count }, "\(name): totals \(totals) over the image's \(data.count) bytes")
        }
    }

    func testABlockMapWritesOnlyMappedBlocksAndIsFoundBesideTheImage() throws {
        let (data, path) = try source()
        // The zeros become holes in the file, which is what bmaptool maps around.
        try DiskImages.tool("fallocate --dig-holes os.img && bmaptool -q create os.img -o os.img.bmap && xz -k -1 -T1 os.img", in: work)
        let device = try loop(8 << 20, fill: 0xAB)
        let result = try flash(["--device", device.path, "--yes", path + ".xz"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stderr.contains("block map \(path).bmap"), result.stderr)
        let written = try device.contents()
        // Mapped blocks hold the image; the holes bmaptool left out were not written at all.
        let block = 64 << 10
        XCTAssertEqual(written.prefix(block), data.prefix(block))
        XCTAssertEqual(written[block..<(2 * block)], Data(repeating: 0xAB, count: block))
        XCTAssertEqual(written[(2 * block)..<(3 * block)], data[(2 * block)..<(3 * block)])
        let mapped = data.count - stride(from: block, to: data.count, by: 3 * block).reduce(0) { $0 + min(block, data.count - $1) }
        XCTAssertEqual(result.events(ofType: "flash_started").first?["totalBytes"] as? Int, mapped, "the mapped bytes, once")
        let lastWrite = result.events(ofType: "flash_progress").last { $0.stageName == "Writing" }
        XCTAssertLessThanOrEqual(lastWrite?["progress"] as? Double ?? 100, 50, "writing is the first half of the job")
    }

    func testOneReadFeedsSeveralTargetsAndAFailingOneIsDroppedAlone() throws {
        let (data, _) = try source()
        try DiskImages.tool("xz -k -1 -T1 os.img", in: work)
        let first = try loop(8 << 20), second = try loop(8 << 20), tooSmall = try loop(2 << 20)
        // --force lets the small disk through the size check, so it fails while writing.
        let result = try flash(["--device", first.path, "--device", tooSmall.path, "--device", second.path, "--yes", "--force", work + "/os.img.xz"])
        XCTAssertNotEqual(result.status, 0)
        let completed = result.events(ofType: "flash_completed").compactMap { $0["deviceId"] as? String }
        XCTAssertEqual(Set(completed), [first.path, second.path])
        let failed = result.events(ofType: "flash_failed")
        XCTAssertEqual(failed.compactMap { $0["deviceId"] as? String }, [tooSmall.path])
        XCTAssertTrue((failed.first?["error"] as? String ?? "").contains("does not fit"), "\(failed)")
        XCTAssertEqual(Set(result.events(ofType: "flash_started").compactMap { $0["jobId"] as? String }).count, 3)
        XCTAssertEqual(try first.contents().prefix(data.count), data)
        XCTAssertEqual(try second.contents().prefix(data.count), data)
    }

    func testBrokenImagesFailClearlyAndNeverLeaveTheFirstMiBWritten() throws {
        _ = try source()
        try DiskImages.tool("xz -k -1 -T1 os.img && gzip -k -1 os.img && head -c 2000000 os.img.xz > truncated.img.xz && cp os.img.gz corrupt.img.gz && printf 'XXXXXXXX' | dd of=corrupt.img.gz bs=1 seek=3000000 conv=notrunc status=none && img2simg os.img os.simg && head -c 3000000 os.simg | xz -1 -T1 > cut.simg.xz", in: work)
        for (name, expected) in [("truncated.img.xz", "truncated"), ("corrupt.img.gz", "CRC-32"), ("cut.simg.xz", "corrupt sparse image")] {
            let device = try loop(8 << 20, fill: 0xAB)
            let result = try flash(["--device", device.path, "--yes", work + "/" + name])
            XCTAssertNotEqual(result.status, 0, name)
            let error = result.events(ofType: "flash_failed").first?["error"] as? String ?? result.stderr
            XCTAssertTrue(error.contains(expected) && error.contains(name), "\(name): \(error)")
            XCTAssertEqual(try device.contents().prefix(1 << 20), Data(repeating: 0xAB, count: 1 << 20), "\(name): the first MiB was written")
        }
    }

    func testBlockMapMismatchesAreRefused() throws {
        let (_, path) = try source()
        try DiskImages.tool("bmaptool -q create os.img -o good.bmap", in: work)
        let good = try String(contentsOfFile: work + "/good.bmap", encoding: .utf8)
        // Edited by hand: the map's own checksum no longer matches, refused before writing.
        let damaged = good.replacingOccurrences(of: "<ImageSize>", with: "<ImageSize> ").replacingOccurrences(of: "chksum=\"", with: "chksum=\"0")
        try damaged.write(toFile: work + "/damaged.bmap", atomically: true, encoding: .utf8)
        let device = try loop(8 << 20, fill: 0xAB)
        let refused = try flash(["--device", device.path, "--yes", "--bmap", work + "/damaged.bmap", path])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("damaged"), refused.stderr)
        XCTAssertEqual(try device.contents(), Data(repeating: 0xAB, count: 8 << 20))

        // The image changed after its map was made: the range checksum catches it.
        var changed = try Data(contentsOf: URL(fileURLWithPath: path))
        changed[100] ^= 0xFF
        try changed.write(to: URL(fileURLWithPath: path))
        let mismatch = try flash(["--device", device.path, "--yes", "--bmap", work + "/good.bmap", path])
        XCTAssertNotEqual(mismatch.status, 0)
        let error = mismatch.events(ofType: "flash_failed").first?["error"] as? String ?? mismatch.stderr
        XCTAssertTrue(error.contains("does not match its block map"), error)

        // --no-verify trusts the image as bmaptool's --no-verify does: written as it is.
        let trusted = try flash(["--device", device.path, "--yes", "--no-verify", "--bmap", work + "/good.bmap", path])
        XCTAssertEqual(trusted.status, 0, trusted.stderr)
        XCTAssertEqual(try device.contents().prefix(4096), changed.prefix(4096))
    }

    func testUnsafeTargetsAreRefusedAndLeftUntouched() throws {
        let (_, path) = try source()
        let small = try loop(2 << 20, fill: 0xAB)
        let tooBig = try flash(["--device", small.path, "--yes", path])
        XCTAssertNotEqual(tooBig.status, 0)
        XCTAssertTrue(tooBig.stderr.contains("larger than \(small.path)"), tooBig.stderr)
        XCTAssertTrue(tooBig.stderr.contains("--force writes anyway"), tooBig.stderr)
        XCTAssertEqual(try small.contents(), Data(repeating: 0xAB, count: 2 << 20))

        let mounted = try loop(8 << 20)
        try DiskImages.tool("mkfs.ext4 -q \(mounted.path) && mkdir -p mnt && mount \(mounted.path) mnt", in: work)
        defer { _ = try? ProcessRunner.run("/bin/umount", [work + "/mnt"]) }
        let before = try mounted.contents()
        let refused = try flash(["--device", mounted.path, "--yes", path])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("mounted at \(work)/mnt: unmount it first (umount '\(work)/mnt')"), refused.stderr)
        XCTAssertFalse(refused.stderr.contains("--force"), "--force cannot write a mounted disk: \(refused.stderr)")
        // Even --force cannot write a disk the kernel has mounted: the exclusive open says so.
        let forced = try flash(["--device", mounted.path, "--yes", "--force", path])
        XCTAssertNotEqual(forced.status, 0)
        XCTAssertTrue((forced.events(ofType: "flash_failed").first?["error"] as? String ?? "").contains("in use"), forced.stdout)
        XCTAssertEqual(try mounted.contents(), before)

        // Without --yes and with no terminal to ask on, nothing is written.
        let device = try loop(8 << 20, fill: 0xAB)
        let unconfirmed = try ProcessRunner.run(ProcessRunner.flashctl, ["flash", "--device", device.path, path])
        XCTAssertNotEqual(unconfirmed.status, 0)
        XCTAssertTrue(unconfirmed.stderr.contains("--yes"), unconfirmed.stderr)
        XCTAssertTrue(unconfirmed.stderr.contains(device.path), "the target is named: \(unconfirmed.stderr)")
        XCTAssertEqual(try device.contents(), Data(repeating: 0xAB, count: 8 << 20))
    }

    /// Ctrl-C in the middle of writing a disk: exit 130 and a line that says the disk now holds
    /// part of the image. The job is slowed by stopping and continuing the process (a real card
    /// writes at a few MB/s; this machine's files take everything at once).
    func testCtrlCWhileWritingSaysTheDiskIsIncompleteAndExits130() throws {
        try DiskImages.tool("base64 -w 0 /dev/urandom | head -c 50331648 > os.img && gzip -1 os.img && truncate -s 64M target.img", in: work)
        let flash = try RunningCommand(ProcessRunner.flashctl, ["flash", "-d", work + "/target.img", "-y", "--json", work + "/os.img.gz"])
        XCTAssertTrue(flash.waitFor(#""stage":"Writing""#), flash.output)
        // Running a twentieth of the time, it writes at about a twentieth of its speed.
        for _ in 0..<25 {
            flash.signal(SIGSTOP); usleep(19_000)
            flash.signal(SIGCONT); usleep(1_000)
        }
        flash.signal(SIGSTOP)
        flash.signal(SIGINT)
        flash.signal(SIGCONT)
        XCTAssertEqual(flash.wait(timeout: 30), 130, flash.output)
        let line = try XCTUnwrap(flash.output.split(separator: "\n").first { $0.hasPrefix("flashctl: cancelled") }, flash.output)
        XCTAssertTrue(line.hasPrefix("flashctl: cancelled after writing ") && line.hasSuffix(" to \(work)/target.img: its contents are now incomplete"), String(line))
    }

    func testARegularFileCanStandInForADisk() throws {
        let (data, _) = try source()
        try DiskImages.tool("zstd -q -1 os.img && truncate -s 8M target.img", in: work)
        let result = try flash(["-d", work + "/target.img", "-y", work + "/os.img.zst"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stderr.contains("\(work)/target.img: written and verified (read back equal): \(work)/os.img.zst (image \(String(format: "%.1f", Double(data.count) / 1048576)) MiB, \(data.count) bytes"), result.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: work + "/target.img")).prefix(data.count), data)
    }
}
