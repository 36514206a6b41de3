import Foundation
import Testing
@testable import FlashEngine

@Suite struct LogicalPartitionMetadataTests {
    /// A super_empty.img made by the test bed's writer (lpmake's format).
    private func superEmpty(_ partitions: [String]) throws -> [UInt8] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let out = NSTemporaryDirectory() + "super_empty-\(UUID().uuidString).img"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [root + "/testbed/make_super_empty.py", out, "268435456", "main_a:134217728", "main_b:134217728"] + partitions
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return Array(try Data(contentsOf: URL(fileURLWithPath: out)))
    }

    @Test func thePartitionsAndGroupsAreRead() throws {
        let metadata = try LogicalPartitionMetadata(parsing: try superEmpty(["system_a:main_a", "vendor_a:main_a", "system_b:main_b"]), source: "super_empty.img")
        #expect(metadata.groups == ["default", "main_a", "main_b"])
        #expect(metadata.partitions == [
            .init(name: "system_a", group: "main_a"), .init(name: "vendor_a", group: "main_a"), .init(name: "system_b", group: "main_b"),
        ])
    }

    @Test func aDamagedImageIsRefusedWithWhatIsWrong() throws {
        let good = try superEmpty(["system_a:main_a"])
        var table = good
        table[table.count - 70] ^= 1
        var header = good
        header[4096 + 20] ^= 1
        var geometry = good
        geometry[20] ^= 1
        for (bytes, why) in [(table, "the tables' checksum is wrong"), (header, "the header's checksum is wrong"),
                             (geometry, "the geometry's checksum is wrong"), (Array(good.prefix(4300)), "its tables go past its end"),
                             ([UInt8](repeating: 0, count: 8192), "no geometry magic")] {
            #expect(throws: FlashError.self) { _ = try LogicalPartitionMetadata(parsing: bytes, source: "x") }
            do {
                _ = try LogicalPartitionMetadata(parsing: bytes, source: "super_empty.img")
            } catch let error as FlashError {
                #expect(error.message == "super_empty.img is not logical partition metadata: \(why)")
            }
        }
    }
}
