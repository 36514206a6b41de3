#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest
@testable import FlashEngine

/// `ImageFile.open`: what is accepted, and the messages for what is not.
final class SparseImageFileTests: XCTestCase {
    private typealias F = SparseFixtures

    private func assertImageError(_ path: String, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ImageFile.open(path: path), file: file, line: line) { error in
            guard let error = error as? FlashError else { return XCTFail("not a FlashError: \(error)", file: file, line: line) }
            XCTAssertEqual(error.kind, .image, file: file, line: line)
            XCTAssertEqual(error.message, expected, file: file, line: line)
        }
    }

    func testRawAndSparseImagesOpen() throws {
        let dir = try F.temporaryDirectory(self)
        let data = F.imageData(size: 200_000, seed: 2)
        let raw = try F.write(data, to: dir.appendingPathComponent("boot.img"))
        let image = try ImageFile.open(path: raw)
        XCTAssertEqual(image.path, raw)
        XCTAssertEqual(image.size, 200_000)
        XCTAssertFalse(image.isSparse)
        XCTAssertNil(image.sparse)
        XCTAssertEqual(image.expandedSize, 200_000)

        let sparsePath = dir.appendingPathComponent("boot.simg").path
        try F.run(F.img2simg, [raw, sparsePath])
        let sparse = try ImageFile.open(path: sparsePath)
        XCTAssertTrue(sparse.isSparse)
        XCTAssertEqual(sparse.size, Int64(try F.read(sparsePath).count))
        XCTAssertEqual(sparse.sparse?.expandedSize, 200_704)
        XCTAssertEqual(sparse.expandedSize, 200_704)

        // Tiny files that are not sparse are fine raw images.
        let tiny = try F.write([0x3A, 0xFF], to: dir.appendingPathComponent("tiny.img"))
        XCTAssertEqual(try ImageFile.open(path: tiny).size, 2)
    }

    func testMissingImage() throws {
        let dir = try F.temporaryDirectory(self)
        let path = dir.appendingPathComponent("boot.img").path
        assertImageError(path, "image not found: \(path)")
        assertImageError(dir.appendingPathComponent("no/such/dir/boot.img").path, "image not found: \(dir.path)/no/such/dir/boot.img")
        assertImageError("", "no image path given")
    }

    func testEmptyImage() throws {
        let dir = try F.temporaryDirectory(self)
        let path = try F.write([], to: dir.appendingPathComponent("empty.img"))
        assertImageError(path, "image is empty: \(path)")
    }

    func testDirectoryImage() throws {
        let dir = try F.temporaryDirectory(self)
        assertImageError(dir.path, "image is a directory, not a file: \(dir.path)")
    }

    func testPathThroughAFileIsUnreadable() throws {
        let dir = try F.temporaryDirectory(self)
        let file = try F.write([1, 2, 3], to: dir.appendingPathComponent("plain"))
        assertImageError(file + "/boot.img", "cannot read image \(file)/boot.img: Not a directory")
    }

    func testPermissionDenied() throws {
        if getuid() != 0 {
            let dir = try F.temporaryDirectory(self)
            let path = try F.write([1, 2, 3], to: dir.appendingPathComponent("secret.img"))
            XCTAssertEqual(chmod(path, 0), 0)
            assertImageError(path, "cannot read image \(path): Permission denied")
            return
        }
        // Root reads any file with permission bits; write-only sysfs attributes still refuse it.
        let candidates = ["/sys/bus/pci/rescan", "/sys/class/zram-control/hot_remove", "/sys/kernel/mm/ksm/run"]
        guard let path = candidates.first(where: { path in
            let fd = open(path, O_RDONLY)
            if fd >= 0 { close(fd); return false }
            return errno == EACCES
        }) else {
            throw FlashError(.io, "running as root and no write-only sysfs file to try: this test needs one")
        }
        assertImageError(path, "cannot read image \(path): Permission denied")
    }

    func testCharacterDeviceIsRefused() throws {
        assertImageError("/dev/null", "image is not a regular file: /dev/null")
    }
}
