/// The fastboot-over-TCP wire format: a handshake ("FB01" from the host, "FB" and a two-digit
/// version from the device), then every message as an 8-byte big-endian length and the payload.
public enum FastbootTCPFraming {
    /// No frame can be longer than the largest download (4 GiB - 1); callers that allocate a
    /// frame's bytes set their own, much smaller, limit.
    public static let maxFrameLength = Int(UInt32.max)
    /// The protocol version this side speaks (and the lowest it accepts from a peer).
    public static let protocolVersion = 1

    /// Host side: sends "FB01", then checks that the device answers "FB" and a version >= 1.
    public static func clientHandshake(socket: POSIXSocket, timeoutMs: Int) throws {
        try socket.writeAll(handshake, timeoutMs: timeoutMs)
        let answer = try socket.readExactly(4, timeoutMs: timeoutMs)
        try checkHandshake(answer, from: socket)
    }

    /// Device side: waits for the host's "FBnn" (any version >= 1) and answers "FB01".
    public static func serverHandshake(socket: POSIXSocket, timeoutMs: Int? = 10_000) throws {
        let greeting = try socket.readExactly(4, timeoutMs: timeoutMs)
        try checkHandshake(greeting, from: socket)
        try socket.writeAll(handshake, timeoutMs: timeoutMs)
    }

    private static var handshake: [UInt8] {
        Array("FB".utf8) + Array(String(protocolVersion / 10 % 10).utf8) + Array(String(protocolVersion % 10).utf8)
    }

    /// The version in a handshake ("FB" and two ASCII digits), or nil when it is not one.
    public static func handshakeVersion(_ bytes: [UInt8]) -> Int? {
        guard bytes.count == 4, bytes[0] == UInt8(ascii: "F"), bytes[1] == UInt8(ascii: "B") else { return nil }
        let digits = bytes[2...]
        guard digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
    }

    private static func checkHandshake(_ bytes: [UInt8], from socket: POSIXSocket) throws {
        guard let version = handshakeVersion(bytes) else {
            throw FlashError(.protocolViolation, "tcp:\(socket.peer) did not answer the fastboot-over-TCP handshake")
        }
        guard version >= protocolVersion else {
            throw FlashError(.protocolViolation, "tcp:\(socket.peer) speaks fastboot-over-TCP version \(version), which is not supported")
        }
    }

    /// The 8-byte big-endian length that precedes every frame.
    public static func header(forLength length: Int) -> [UInt8] {
        let value = UInt64(length)
        return (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
    }

    /// Decodes a frame header; nil when it announces more than `maxFrameLength` bytes.
    public static func length(fromHeader header: [UInt8]) -> Int? {
        guard header.count == 8 else { return nil }
        let length = header.reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
        return length <= UInt64(maxFrameLength) ? Int(length) : nil
    }

    public static func writeFrame(_ payload: [UInt8], socket: POSIXSocket, timeoutMs: Int?) throws {
        try payload.withUnsafeBytes { try writeFrame($0, socket: socket, timeoutMs: timeoutMs) }
    }

    /// Sends the header and the payload together (one `sendmsg` when the socket takes it all);
    /// `timeoutMs` is the longest the peer may take no byte of it.
    public static func writeFrame(_ payload: UnsafeRawBufferPointer, socket: POSIXSocket, timeoutMs: Int?) throws {
        let header = header(forLength: payload.count)
        try header.withUnsafeBytes { try socket.writeAll($0, payload, timeoutMs: timeoutMs) }
    }

    /// Reads one frame's length (checked against `maxFrameLength`); the caller then reads that
    /// many bytes in as many pieces as it likes.
    public static func readFrameLength(socket: POSIXSocket, timeoutMs: Int?) throws -> Int {
        let header = try socket.readExactly(8, timeoutMs: timeoutMs)
        guard let length = length(fromHeader: header) else {
            let announced = header.reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
            throw FlashError(.protocolViolation, "tcp:\(socket.peer) announced a \(announced)-byte frame (more than \(maxFrameLength))")
        }
        return length
    }

    /// Reads one whole frame of at most `maxLength` bytes; a longer one is refused before its
    /// payload is read or allocated (the connection is then out of step and should be closed).
    public static func readFrame(socket: POSIXSocket, maxLength: Int, timeoutMs: Int?) throws -> [UInt8] {
        let length = try readFrameLength(socket: socket, timeoutMs: timeoutMs)
        guard length <= maxLength else {
            throw FlashError(.protocolViolation, "tcp:\(socket.peer) sent a \(length)-byte message where at most \(maxLength) are allowed")
        }
        return try socket.readExactly(length, timeoutMs: timeoutMs)
    }
}
