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
    /// taken only when they lead inside; `..` and symlinks that lead out are refused.
    func resolve(_ name: String) throws -> String {
        guard !name.isEmpty, !name.contains("\0") else {
            throw FlashError(.image, "no image named")
        }
        let joined = name.hasPrefix("/") ? name : path + "/" + name
        guard let real = Self.realPath(joined) else {
            throw FlashError(.image, "no image '\(name)' in \(path)")
        }
        guard real.hasPrefix(path + "/") else {
            throw FlashError(.image, "'\(name)' is outside the image directory \(path); only images inside it can be flashed through the API")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: real, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw FlashError(.image, "'\(name)' is not an image file")
        }
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
