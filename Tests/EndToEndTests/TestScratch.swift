import Foundation

/// Where the tests' own files go: one folder per test process, removed when the process exits, so
/// that runs do not pile up folders in the temporary directory.
enum TestScratch {
    static let root: String = {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("flashctl-tests-\(getpid())").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: TestScratch.root) }
        return path
    }()

    /// A new empty folder under `root`.
    static func directory(_ prefix: String) throws -> String {
        let path = root + "/\(prefix)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
