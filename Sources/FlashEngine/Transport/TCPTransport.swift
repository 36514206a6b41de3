/// Fastboot over TCP: the `FB01` handshake, then every message framed by an 8-byte big-endian
/// length. Used for network-attached devices and for emulated ones.
public final class TCPTransport: FastbootTransport, @unchecked Sendable {
    public let peerDescription: String
    private let socket: POSIXSocket
    /// Download data is framed in pieces of this size, so acknowledged bytes advance smoothly.
    /// With a send buffer of the same size, what is read and hashed ahead of the device stays
    /// under a megabyte or so: a job's work follows the device's pace instead of filling
    /// megabytes of buffers at its start (on a busy server, at the moment the dashboards are
    /// told of it). 4 MiB frames were no faster.
    private let frameSize: Int

    /// A cancel of `control` ends the connect and the handshake at once.
    public init(host: String, port: UInt16, timeoutMs: Int, frameSize: Int = 256 << 10, control: JobControl? = nil) throws {
        peerDescription = "tcp:\(host):\(port)"
        self.frameSize = frameSize
        socket = try POSIXSocket.connect(host: host, port: port, timeoutMs: timeoutMs, control: control)
        socket.setSendBufferSize(frameSize)
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
        if let lending = source as? LendingByteStream {
            return try writeLent(lending, totalBytes: totalBytes, timeoutMs: timeoutMs, onAcknowledged: onAcknowledged)
        }
        var buffer = [UInt8](repeating: 0, count: frameSize)
        var sent: Int64 = 0
        var acknowledged: Int64 = 0
        while sent < totalBytes {
            let wanted = Int(min(Int64(frameSize), totalBytes - sent))
            var filled = 0
            while filled < wanted {
                let n = try buffer.withUnsafeMutableBytes { raw in
                    try source.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[filled..<wanted]))
                }
                if n == 0 { break }
                filled += n
            }
            guard filled == wanted else {
                throw FlashError(.image, "image data ended \(totalBytes - sent - Int64(filled)) bytes before the announced size")
            }
            try buffer.withUnsafeBytes { try FastbootTCPFraming.writeFrame(UnsafeRawBufferPointer(rebasing: $0[0..<filled]), socket: socket, timeoutMs: timeoutMs) }
            sent += Int64(filled)
            // What the device's TCP has acknowledged, not what waits in our send queue (the
            // frames' 8-byte headers in it are counted as data: a few bytes early at most).
            acknowledged = max(acknowledged, sent - Int64(socket.unacknowledgedBytes))
            onAcknowledged(acknowledged)
        }
    }

    /// Sends what `source` lends, one frame per piece, straight from the read-ahead's buffers: no
    /// copy into a frame buffer of our own.
    private func writeLent(_ source: LendingByteStream, totalBytes: Int64, timeoutMs: Int, onAcknowledged: (Int64) -> Void) throws {
        var sent: Int64 = 0
        var acknowledged: Int64 = 0
        while sent < totalBytes {
            guard let piece = try source.borrow(maxLength: Int(min(Int64(frameSize), totalBytes - sent))), piece.count > 0 else {
                throw FlashError(.image, "image data ended \(totalBytes - sent) bytes before the announced size")
            }
            try FastbootTCPFraming.writeFrame(piece, socket: socket, timeoutMs: timeoutMs)
            sent += Int64(piece.count)
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
