/// Fastboot over TCP: the `FB01` handshake, then every message framed by an 8-byte big-endian
/// length. Used for network-attached devices and for emulated ones.
public final class TCPTransport: FastbootTransport, @unchecked Sendable {
    public let peerDescription: String
    private let socket: POSIXSocket
    /// Download data is written in pieces of this size, and the bytes the device acknowledged
    /// are counted after each, so progress advances smoothly.
    private let writeSize: Int

    /// A cancel of `control` ends the connect and the handshake at once. The send buffer is
    /// kept to one write: with the kernel left to size it (up to 4 MiB) both flashctl and the
    /// device used more CPU (docs/performance.md).
    public init(host: String, port: UInt16, timeoutMs: Int, writeSize: Int = 256 << 10, control: JobControl? = nil) throws {
        peerDescription = "tcp:\(host):\(port)"
        self.writeSize = writeSize
        socket = try POSIXSocket.connect(host: host, port: port, timeoutMs: timeoutMs, control: control)
        socket.setSendBufferSize(writeSize)
        let socket = self.socket
        let cancelHandler = control?.onCancel { socket.interrupt() }
        defer { cancelHandler.map { control?.removeCancelHandler($0) } }
        do {
            try FastbootTCPFraming.clientHandshake(socket: socket, timeoutMs: timeoutMs)
        } catch let error as FlashError where error.kind == .cancelled {
            socket.close()
            throw error
        } catch let error as FlashError {
            socket.close()
            throw FlashError(error.kind, "\(peerDescription) is not a fastboot device: \(error.message)")
        }
    }

    deinit {
        socket.close()
    }

    public func write(_ bytes: [UInt8], timeoutMs: Int) throws {
        try FastbootTCPFraming.writeFrame(bytes, socket: socket, timeoutMs: timeoutMs)
    }

    public func read(maxLength: Int, timeoutMs: Int, cutShortOnCancel: Bool) throws -> [UInt8] {
        try FastbootTCPFraming.readFrame(socket: socket, maxLength: maxLength, timeoutMs: timeoutMs)
    }

    public func writeStream(_ source: ByteStream, totalBytes: Int64, timeoutMs: Int, onAcknowledged: (Int64) -> Void) throws {
        let lending = source as? LendingByteStream ?? CopyingLender(source)
        // The whole download is one frame, as AOSP fastboot sends it: the device reads it in as
        // large pieces as it likes instead of parsing a header every few hundred KiB.
        let header = FastbootTCPFraming.header(forLength: Int(totalBytes))
        var sent: Int64 = 0
        var acknowledged: Int64 = 0
        while sent < totalBytes {
            guard let piece = try lending.borrow(maxLength: Int(min(Int64(writeSize), totalBytes - sent))), piece.count > 0 else {
                throw FlashError(.image, "image data ended \(totalBytes - sent) bytes before the announced size")
            }
            if sent == 0 {
                try header.withUnsafeBytes { try socket.writeAll($0, piece, timeoutMs: timeoutMs) }
            } else {
                try socket.writeAll(piece, timeoutMs: timeoutMs)
            }
            sent += Int64(piece.count)
            // What the device's TCP has acknowledged, not what waits in our send queue (the
            // frame's 8-byte header in it is counted as data: a few bytes early at most).
            acknowledged = max(acknowledged, sent - Int64(socket.unacknowledgedBytes))
            onAcknowledged(acknowledged)
        }
    }

    public var padsCancelledDownloads: Bool { false }

    public func interrupt() {
        socket.interrupt()
    }

    public func close() {
        socket.close()
    }
}
