import Foundation
import XCTest

/// A loop device over a file of its own: a real block device for disk-flashing tests.
final class LoopDevice {
    let backingFile: String
    let path: String

    private let tmpfs: String?

    /// A device of `size` bytes, every byte `fill`. With `failingAfter`, the device's file lies
    /// on a tmpfs of that many bytes, so writes past them fail (ENOSPC, seen as EIO): a disk
    /// that dies mid-write.
    init(size: Int, fill: UInt8 = 0, failingAfter limit: Int? = nil) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-loop-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        backingFile = directory.appendingPathComponent("disk.img").path
        if let limit {
            let mounted = try ProcessRunner.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(limit)", "flashctl-test", directory.path])
            guard mounted.status == 0 else {
                throw NSError(domain: "LoopDevice", code: 1, userInfo: [NSLocalizedDescriptionKey: "mounting a tmpfs failed (tests need root): \(mounted.stderr)"])
            }
            tmpfs = directory.path
            // Sparse: the tmpfs fills as the device is written.
            _ = FileManager.default.createFile(atPath: backingFile, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: backingFile))
            try handle.truncate(atOffset: UInt64(size))
            try handle.close()
        } else {
            tmpfs = nil
            try Data(repeating: fill, count: size).write(to: URL(fileURLWithPath: backingFile))
        }
        let result = try ProcessRunner.run("/usr/sbin/losetup", ["--find", "--show", backingFile])
        guard result.status == 0 else {
            throw NSError(domain: "LoopDevice", code: 1, userInfo: [NSLocalizedDescriptionKey: "losetup failed (tests need root and /dev/loop-control): \(result.stderr)"])
        }
        path = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// What the device holds now, read past the page cache.
    func contents() throws -> Data {
        let result = try ProcessRunner.run("/bin/sh", ["-c", "dd if=\(path) iflag=direct bs=1M status=none | base64 -w0"])
        return Data(base64Encoded: result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? Data()
    }

    func detach() {
        _ = try? ProcessRunner.run("/usr/sbin/losetup", ["--detach", path])
        if let tmpfs { _ = try? ProcessRunner.run("/bin/umount", [tmpfs]) }
        try? FileManager.default.removeItem(atPath: (backingFile as NSString).deletingLastPathComponent)
    }
}

/// Images for the disk tests, made by the real tools.
enum DiskImages {
    /// `size` bytes: random data with runs of zeros (so block maps and sparse images have holes).
    static func withHoles(_ size: Int, seed: UInt64 = 7) -> Data {
        var data = TestImages.random(size, seed: seed)
        let block = 64 << 10
        for start in stride(from: block, to: size, by: 3 * block) {
            data.replaceSubrange(start..<min(size, start + block), with: Data(count: min(size, start + block) - start))
        }
        return data
    }

    /// `sha256sum`'s answer for a file.
    static func sha256(_ path: String) throws -> String {
        let result = try ProcessRunner.run("/usr/bin/sha256sum", [path])
        return String(result.stdout.prefix(64))
    }

    /// Runs a tool in the image's folder, failing the test when it fails.
    static func tool(_ command: String, in directory: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try ProcessRunner.run("/bin/sh", ["-c", "cd '\(directory)' && \(command)"], timeout: 120)
        XCTAssertEqual(result.status, 0, "\(command): \(result.stderr)", file: file, line: line)
    }
}
