/// What an image file holds, told by its first bytes (never by its name).
public enum ImageFormat: String, Sendable, Equatable {
    case raw
    case androidSparse = "android-sparse"
    case gzip
    case xz
    case zstd
    case bzip2
    case zip

    /// Formats libarchive decompresses for us.
    public var isCompressed: Bool {
        switch self {
        case .gzip, .xz, .zstd, .bzip2, .zip: return true
        case .raw, .androidSparse: return false
        }
    }

    /// Looks at up to the first 6 bytes of a file.
    public static func detect(_ head: [UInt8]) -> ImageFormat {
        func starts(_ magic: [UInt8]) -> Bool { head.count >= magic.count && Array(head.prefix(magic.count)) == magic }
        if starts([0x3A, 0xFF, 0x26, 0xED]) { return .androidSparse }
        if starts([0x1F, 0x8B]) { return .gzip }
        if starts([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { return .xz }
        if starts([0x28, 0xB5, 0x2F, 0xFD]) { return .zstd }
        if starts([0x42, 0x5A, 0x68]) { return .bzip2 }
        // A zip starts with a file's local header; one with no file at all is only its end record
        // (PK 05 06), which must be refused as an empty archive, never written as 22 raw bytes.
        if starts([0x50, 0x4B, 0x03, 0x04]) || starts([0x50, 0x4B, 0x05, 0x06]) || starts([0x50, 0x4B, 0x07, 0x08]) { return .zip }
        return .raw
    }
}
