import FlashEngine
import Foundation

/// The directory API requests may name images in, and nothing outside it.
struct ImageDirectory: Sendable {
    let path: String

    init(path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard let real = Self.realPath(path) else {
            throw FlashError(.io, "cannot use \(path) as the image directory")
        }
        self.path = real
    }

    /// The real path of `name` if it is a regular file inside the directory. Absolute paths are
    /// taken only when they lead inside; `..`, symlinks that lead out and hard links (a file with
    /// more than one name may be a file outside) are refused. Every refusal is the same answer,
    /// which says nothing of what exists outside the directory, nor where the directory is.
    func resolve(_ name: String) throws -> String {
        let refused = FlashError(.image, "no image '\(name)' in the image directory")
        guard !name.isEmpty, !name.contains("\0") else {
            throw FlashError(.image, "no image named")
        }
        let joined = name.hasPrefix("/") ? name : path + "/" + name
        guard let real = Self.realPath(joined), real.hasPrefix(path + "/") else { throw refused }
        var status = stat()
        guard lstat(real, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG, status.st_nlink == 1 else { throw refused }
        return real
    }

    /// Regular files in the directory (not recursing), by name.
    func list() -> [ImageBody] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.sorted().compactMap { name in
            guard !name.hasPrefix("."), let real = try? resolve(name),
                  let attributes = try? FileManager.default.attributesOfItem(atPath: real) else { return nil }
            let size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
            let modified = (attributes[.modificationDate] as? Date).map { Int64($0.timeIntervalSince1970 * 1000) } ?? 0
            return ImageBody(name: name, size: size, modified: modified)
        }
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
