/// The fastboot-over-TCP wire format: a handshake ("FB01" from the host, "FB" and a two-digit
/// version from the device), then every message as an 8-byte big-endian length and the payload.
public enum FastbootTCPFraming {
    /// Larger frames are refused before anything is allocated: the peer is never trusted.
    public static let maxFrameLength = 256 << 20

    public static func clientHandshake(socket: POSIXSocket, timeoutMs: Int) throws {
        try socket.writeAll(Array("FB01".utf8))
        let answer = try socket.readExactly(4, timeoutMs: timeoutMs)
        try checkHandshake(answer)
    }

    public static func serverHandshake(socket: POSIXSocket, timeoutMs: Int? = 10_000) throws {
        let greeting = try socket.readExactly(4, timeoutMs: timeoutMs)
        try checkHandshake(greeting)
        try socket.writeAll(Array("FB01".utf8))
    }

    private static func checkHandshake(_ bytes: [UInt8]) throws {
        guard bytes.count == 4, bytes[0] == UInt8(ascii: "F"), bytes[1] == UInt8(ascii: "B"),
              let version = Int(String(decoding: bytes[2...], as: UTF8.self)), version >= 1 else {
            throw FlashError(.protocolViolation, "bad fastboot-over-TCP handshake")
        }
    }

    public static func writeFrame(_ payload: [UInt8], socket: POSIXSocket) throws {
        try payload.withUnsafeBytes { try writeFrame($0, socket: socket) }
    }

    public static func writeFrame(_ payload: UnsafeRawBufferPointer, socket: POSIXSocket) throws {
        var header = [UInt8](repeating: 0, count: 8)
        var length = UInt64(payload.count)
        for index in (0..<8).reversed() {
            header[index] = UInt8(length & 0xff)
            length >>= 8
        }
        try socket.writeAll(header)
        if payload.count > 0 {
            try socket.writeAll(payload)
        }
    }

    /// Reads one frame's length; the caller then reads that many bytes in as many pieces as it likes.
    public static func readFrameLength(socket: POSIXSocket, timeoutMs: Int?) throws -> Int {
        let header = try socket.readExactly(8, timeoutMs: timeoutMs)
        let length = header.reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
        guard length <= UInt64(maxFrameLength) else {
            throw FlashError(.protocolViolation, "tcp:\(socket.peer) announced a \(length)-byte frame (more than \(maxFrameLength))")
        }
        return Int(length)
    }

    public static func readFrame(socket: POSIXSocket, maxLength: Int, timeoutMs: Int?) throws -> [UInt8] {
        let length = try readFrameLength(socket: socket, timeoutMs: timeoutMs)
        guard length <= maxLength else {
            throw FlashError(.protocolViolation, "tcp:\(socket.peer) sent a \(length)-byte message where at most \(maxLength) are allowed")
        }
        return try socket.readExactly(length, timeoutMs: timeoutMs)
    }
}
