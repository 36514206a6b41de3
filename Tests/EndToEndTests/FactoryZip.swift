import Foundation
import XCTest

/// Factory image zips for the tests: android-info.txt, images of random bytes, and for dynamic
/// partitions a super_empty.img (testbed/make_super_empty.py, as lpmake writes one).
enum FactoryZip {
    /// Writes the images into `folder/zip/` and returns the path of `folder/zip/image-emu.zip`.
    static func make(in folder: String, board: String = "flashctl-emulator", images: [String: Int], superPartitions: [String] = []) throws -> String {
        let files = folder + "/zip"
        try FileManager.default.createDirectory(atPath: files, withIntermediateDirectories: true)
        try "require board=\(board)\nrequire version-bootloader=emu-bootloader-1.0\n".write(toFile: files + "/android-info.txt", atomically: true, encoding: .utf8)
        var paths = [files + "/android-info.txt"]
        for (index, (name, size)) in images.sorted(by: { $0.key < $1.key }).enumerated() {
            try TestImages.random(size, seed: UInt64(index + 7)).write(to: URL(fileURLWithPath: files + "/\(name).img"))
            paths.append(files + "/\(name).img")
        }
        if !superPartitions.isEmpty {
            // The metadata of a super partition of 256 MiB with a group per slot.
            let groups = ["main_a:134217728", "main_b:134217728"]
            let partitions = superPartitions.flatMap { ["\($0)_a:main_a", "\($0)_b:main_b"] }
            let made = try ProcessRunner.run("/usr/bin/python3", [ProcessRunner.packageRoot + "/testbed/make_super_empty.py", files + "/super_empty.img", "268435456"] + groups + partitions)
            XCTAssertEqual(made.status, 0, made.stderr)
            paths.append(files + "/super_empty.img")
        }
        let zip = files + "/image-emu.zip"
        let made = try ProcessRunner.run("/usr/bin/zip", ["-q", "-j", zip] + paths)
        XCTAssertEqual(made.status, 0, made.stderr)
        return zip
    }
}
