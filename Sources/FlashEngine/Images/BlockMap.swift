import Crypto
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// A bmaptool block map (`.bmap`, format 1.x or 2.x): which blocks of an image hold data, with a
/// checksum per range. Only mapped ranges are written; each range's checksum is checked as its
/// bytes are read, before they are written.
public struct BlockMap: Sendable, Equatable {
    public enum ChecksumType: String, Sendable {
        case sha256
        case sha1
    }

    public struct Range: Sendable, Equatable {
        /// First and last block, inclusive.
        public var first: Int64
        public var last: Int64
        /// Hex checksum of the range's bytes (nil when the map has none for it).
        public var checksum: String?

        public var blockCount: Int64 { last - first + 1 }
    }

    public var path: String
    public var imageSize: Int64
    public var blockSize: Int64
    public var blocksCount: Int64
    public var checksumType: ChecksumType
    public var ranges: [Range]

    /// Bytes the ranges cover (the last block may be cut short by the image's end).
    public var mappedBytes: Int64 {
        ranges.reduce(0) { $0 + byteRange(of: $1).count }
    }

    /// The byte offsets a range covers within the image.
    public func byteRange(of range: Range) -> (offset: Int64, count: Int64) {
        let start = range.first * blockSize
        let end = min((range.last + 1) * blockSize, imageSize)
        return (start, max(0, end - start))
    }

    /// Reads and checks `path`: the XML, its own checksum (`BmapFileChecksum`), and ranges that
    /// are in order, inside the image and not overlapping.
    public static func load(path: String) throws -> BlockMap {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FlashError(.image, "cannot read the block map \(path)")
        }
        return try parse(data, path: path)
    }

    public static func parse(_ data: Data, path: String) throws -> BlockMap {
        let reader = BlockMapXMLReader()
        let parser = XMLParser(data: data)
        parser.delegate = reader
        guard parser.parse(), reader.error == nil else {
            let line = parser.lineNumber
            throw FlashError(.image, "the block map \(path) is not valid bmap XML (line \(line)): \(reader.error ?? parser.parserError.map { "\($0)" } ?? "unreadable")")
        }
        func number(_ name: String) throws -> Int64 {
            guard let text = reader.fields[name], let value = Int64(text), value >= 0 else {
                throw FlashError(.image, "the block map \(path) has no valid <\(name)>")
            }
            return value
        }
        let version = reader.version ?? ""
        guard version.hasPrefix("1.") || version.hasPrefix("2.") else {
            throw FlashError(.image, "the block map \(path) has format version '\(version)'; flashctl reads 1.x and 2.x")
        }
        let type: ChecksumType
        if let named = reader.fields["ChecksumType"] {
            guard let known = ChecksumType(rawValue: named.lowercased()) else {
                throw FlashError(.image, "the block map \(path) uses checksum '\(named)'; flashctl knows sha256 and sha1")
            }
            type = known
        } else {
            type = .sha1
        }
        let map = BlockMap(
            path: path, imageSize: try number("ImageSize"), blockSize: try number("BlockSize"),
            blocksCount: try number("BlocksCount"), checksumType: type, ranges: reader.ranges)
        guard map.blockSize > 0, map.blockSize % 512 == 0 else {
            throw FlashError(.image, "the block map \(path) has an unusable block size \(map.blockSize)")
        }
        var next: Int64 = 0
        for range in map.ranges {
            guard range.first >= next, range.last >= range.first, range.last < map.blocksCount else {
                throw FlashError(.image, "the block map \(path) has a range \(range.first)-\(range.last) out of order or outside its \(map.blocksCount) blocks")
            }
            next = range.last + 1
        }
        try verifyOwnChecksum(data, reader: reader, type: type, path: path)
        return map
    }

    /// `BmapFileChecksum` (or `BmapFileSHA1`) is the checksum of the file with that value
    /// replaced by zeros: a block map damaged in transit is refused.
    private static func verifyOwnChecksum(_ data: Data, reader: BlockMapXMLReader, type: ChecksumType, path: String) throws {
        guard let expected = reader.fields["BmapFileChecksum"] ?? reader.fields["BmapFileSHA1"] else { return }
        guard let text = String(data: data, encoding: .utf8), let found = text.range(of: expected) else {
            throw FlashError(.image, "the block map \(path) is damaged (its own checksum cannot be checked)")
        }
        let zeroed = text.replacingCharacters(in: found, with: String(repeating: "0", count: expected.count))
        let actual = hexDigest(type, Data(zeroed.utf8))
        guard actual == expected.lowercased() else {
            throw FlashError(.image, "the block map \(path) is damaged: its checksum does not match its contents")
        }
    }

    static func hexDigest(_ type: ChecksumType, _ data: Data) -> String {
        switch type {
        case .sha256: return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        case .sha1: return Insecure.SHA1.hash(data: data).map { String(format: "%02x", $0) }.joined()
        }
    }
}

/// Collects the few elements of a bmap file.
private final class BlockMapXMLReader: NSObject, XMLParserDelegate {
    var version: String?
    var fields: [String: String] = [:]
    var ranges: [BlockMap.Range] = []
    var error: String?
    private var text = ""
    private var rangeChecksum: String?

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        text = ""
        if name == "bmap" { version = attributes["version"]?.trimmingCharacters(in: .whitespaces) }
        if name == "Range" { rangeChecksum = attributes["chksum"] ?? attributes["sha1"] }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        text += string
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
        text = ""
        switch name {
        case "Range":
            let parts = value.split(separator: "-").map { Int64($0.trimmingCharacters(in: .whitespaces)) }
            guard (parts.count == 1 || parts.count == 2), let first = parts.first ?? nil, let last = parts.last ?? nil else {
                error = "unreadable range '\(value)' on line \(parser.lineNumber)"
                parser.abortParsing()
                return
            }
            ranges.append(.init(first: first, last: last, checksum: rangeChecksum?.lowercased()))
        case "bmap", "BlockMap":
            break
        default:
            fields[name] = value
        }
    }
}
