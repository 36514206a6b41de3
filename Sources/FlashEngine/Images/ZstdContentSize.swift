/// The decompressed size of a `.zst` file from its frame headers (`zstd` records the content size
/// when it knows it, as for files), walking every frame's blocks to find the next frame. Skippable
/// frames count nothing.
enum ZstdContentSize {
    /// nil when a frame does not record its size or the file is not well formed.
    static func of(_ file: ImageDescriptor, fileSize: Int64) -> Int64? {
        var at: Int64 = 0
        var total: Int64 = 0
        while at < fileSize {
            guard let magic = try? file.readBytes(4, at: at) else { return nil }
            let value = ImageBytes.le32(magic, 0)
            if value & 0xFFFF_FFF0 == 0x184D_2A50 {
                guard let size = try? file.readBytes(4, at: at + 4) else { return nil }
                at += 8 + Int64(ImageBytes.le32(size, 0))
                continue
            }
            guard value == 0xFD2F_B528, let frame = frame(file, at: at + 4, fileSize: fileSize) else { return nil }
            total += frame.contentSize
            at = frame.end
        }
        return at == fileSize ? total : nil
    }

    private static func frame(_ file: ImageDescriptor, at start: Int64, fileSize: Int64) -> (contentSize: Int64, end: Int64)? {
        guard let descriptor = try? file.readBytes(1, at: start).first else { return nil }
        let sizeFlag = Int(descriptor >> 6)
        let singleSegment = descriptor & 0x20 != 0
        let hasChecksum = descriptor & 0x04 != 0
        let dictionaryBytes = [0, 1, 2, 4][Int(descriptor & 3)]
        let sizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][sizeFlag]
        guard sizeBytes > 0 else { return nil }
        let sizeAt = start + 1 + (singleSegment ? 0 : 1) + Int64(dictionaryBytes)
        guard let field = try? file.readBytes(sizeBytes, at: sizeAt) else { return nil }
        var size: UInt64 = 0
        for (index, byte) in field.enumerated() { size |= UInt64(byte) << UInt64(8 * index) }
        if sizeBytes == 2 { size += 256 }
        guard size <= UInt64(Int64.max) else { return nil }

        var at = sizeAt + Int64(sizeBytes)
        while true {
            guard at + 3 <= fileSize, let header = try? file.readBytes(3, at: at) else { return nil }
            let value = Int(header[0]) | Int(header[1]) << 8 | Int(header[2]) << 16
            let type = (value >> 1) & 3
            guard type != 3 else { return nil }
            at += 3 + (type == 1 ? 1 : Int64(value >> 3))
            if value & 1 != 0 { break }
        }
        if hasChecksum { at += 4 }
        return at <= fileSize ? (Int64(size), at) : nil
    }
}
