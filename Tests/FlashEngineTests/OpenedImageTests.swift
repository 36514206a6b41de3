@testable import FlashEngine
import Foundation
import Testing

/// The one image opener both targets use: what it finds out about each kind of image, and what
/// it refuses before anything is read for writing.
@Suite final class OpenedImageTests {
    private let directory = NSTemporaryDirectory() + "flashctl-opened-\(UUID().uuidString)"

    init() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let data = Data((0..<(64 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        try data.write(to: URL(fileURLWithPath: directory + "/os.img"))
        try run("img2simg os.img os.simg && gzip -k -1 os.simg && gzip -k -1 os.img && zip -q two.zip os.img os.simg && bmaptool -q create os.img -o os.img.bmap && cp os.img other.img && truncate -s 128K other.img && cp os.img.bmap other.img.bmap")
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func run(_ command: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "cd '\(directory)' && \(command)"]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(command)")
    }

    private func open(_ name: String, bmap: String? = nil, noBmap: Bool = false, entry: String? = nil) throws -> OpenedImage {
        try OpenedImage.open(path: directory + "/" + name, bmapPath: bmap.map { directory + "/" + $0 }, noBmap: noBmap, entry: entry)
    }

    private func refusal(_ body: () throws -> OpenedImage) -> String {
        do {
            _ = try body()
            return "opened"
        } catch {
            return "\(error)"
        }
    }

    @Test func eachKindOfImageIsFoundByItsContent() throws {
        guard case .rawFile(let file, let map) = try open("os.img").content else { Issue.record("os.img"); return }
        #expect(file.size == 64 << 10)
        #expect(map?.path == directory + "/os.img.bmap", "the block map beside the image is found")
        guard case .rawFile(_, nil) = try open("os.img", noBmap: true).content else { Issue.record("--no-bmap"); return }
        guard case .sparseFile = try open("os.simg").content else { Issue.record("os.simg"); return }
        guard case .compressedSparse = try open("os.simg.gz").content else { Issue.record("os.simg.gz"); return }
        let gzip = try open("os.img.gz")
        guard case .compressedRaw(_, let gzipMap, _) = gzip.content else { Issue.record("os.img.gz"); return }
        #expect(gzip.format == .gzip)
        #expect(gzipMap?.path == directory + "/os.img.bmap", "os.img.gz finds os.img.bmap as bmaptool does")
        let zip = try open("two.zip", entry: "os.simg")
        #expect(zip.entry == "os.simg")
        guard case .compressedSparse = zip.content else { Issue.record("two.zip os.simg"); return }
    }

    @Test func whatCannotBeRightIsRefusedNamingTheFiles() {
        #expect(refusal { try self.open("os.simg", bmap: "os.img.bmap") }.contains("is an Android sparse image, which maps its own blocks"))
        #expect(refusal { try self.open("os.img", entry: "x") }.contains("is raw, not a zip"))
        #expect(refusal { try self.open("other.img") }.contains("describes an image of 65536 bytes, but \(directory)/other.img holds 131072 bytes"))
        #expect(refusal { try self.open("two.zip") }.contains("os.img") , "a zip of several names them")
        #expect(refusal { try self.open("missing.img") }.contains("not found"))
        // An empty zip is its 22-byte end record: refused, not written as a raw image.
        FileManager.default.createFile(atPath: directory + "/empty.zip", contents: Data([0x50, 0x4B, 0x05, 0x06] + [UInt8](repeating: 0, count: 18)))
        #expect(refusal { try self.open("empty.zip") }.contains("empty.zip holds no file"))
    }

    /// A disk job reads its image when it starts writing, which may be long after the image was
    /// checked (a batch waiting for its disks): a file replaced or rewritten meanwhile is refused,
    /// not written against the size and map found before.
    @Test(arguments: ["os.img", "os.simg", "os.img.gz"])
    func anImageChangedAfterItWasCheckedIsNotReadForWriting(name: String) throws {
        let path = directory + "/" + name
        let replaced = try DiskImage.open(path: path)
        try run("cp \(name) \(name).new && mv \(name).new \(name)")
        let changed = "image \(path) changed after the job checked it (it was replaced or rewritten): start the job again to flash the new file"
        #expect(throws: FlashError(.image, changed)) { _ = try replaced.makeReader() }

        let rewritten = try DiskImage.open(path: path)
        try run("touch -d '2001-01-01' \(name)")
        #expect(throws: FlashError(.image, changed)) { _ = try rewritten.makeReader() }
        _ = try DiskImage.open(path: path).makeReader()
    }
}
