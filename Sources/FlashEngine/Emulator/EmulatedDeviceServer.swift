import Dispatch
import Foundation

/// Serves an emulated fastboot device over fastboot-over-TCP: one thread per connection, any
/// number of connections one after another or at once.
public final class EmulatedDeviceServer: @unchecked Sendable {
    /// Changes take effect for connections made after them; set it before `start()`.
    public var config: EmulatedDeviceConfig
    public let host: String
    /// The port actually listened on (useful when asked for port 0).
    public let port: UInt16
    private let listener: POSIXSocket
    private let lock = PthreadLock()
    private var connections: [Int: POSIXSocket] = [:]
    private var nextConnectionID = 0
    private var stopped = false
    private let running = DispatchGroup()

    /// Longest command accepted; longer frames outside a download are answered FAIL.
    static let maxCommandLength = 4096

    public init(config: EmulatedDeviceConfig, host: String = "127.0.0.1", port: UInt16 = DeviceSelector.defaultTCPPort) throws {
        do {
            try FileManager.default.createDirectory(atPath: config.directory, withIntermediateDirectories: true)
        } catch {
            throw FlashError(.io, "cannot create the partition folder \(config.directory): \(error.localizedDescription)")
        }
        self.config = config
        self.host = host
        listener = try POSIXSocket.listen(host: host, port: port)
        self.port = listener.localPort
    }

    public func start() {
        running.enter()
        Thread.detachNewThread { [self] in
            defer { running.leave() }
            acceptLoop()
        }
    }

    /// Closes the listener and every connection, and waits for their threads.
    public func stop() {
        let open: [POSIXSocket] = lock.withLock {
            stopped = true
            return Array(connections.values)
        }
        listener.close()
        for connection in open { connection.close() }
        _ = running.wait(timeout: .now() + 5)
    }

    private func acceptLoop() {
        while true {
            guard let socket = try? listener.accept() else { return }
            let id: Int? = lock.withLock {
                guard !stopped else { return nil }
                nextConnectionID += 1
                connections[nextConnectionID] = socket
                return nextConnectionID
            }
            guard let id else {
                socket.close()
                return
            }
            running.enter()
            Thread.detachNewThread { [self] in
                defer {
                    socket.close()
                    lock.withLock { _ = connections.removeValue(forKey: id) }
                    running.leave()
                }
                serve(socket, id: id)
            }
        }
    }

    private func serve(_ socket: POSIXSocket, id: Int) {
        do {
            try FastbootTCPFraming.serverHandshake(socket: socket)
        } catch {
            return
        }
        let session = EmulatedFastbootSession(config: config, connectionID: id)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        do {
            while true {
                let length = try FastbootTCPFraming.readFrameLength(socket: socket, timeoutMs: nil)
                var actions: [EmulatedFastbootSession.Action] = []
                if session.isReceivingData {
                    var remaining = length
                    while remaining > 0 {
                        let n = try socket.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(remaining, buffer.count)]), timeoutMs: nil)
                        remaining -= n
                        actions += session.receiveData(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                        if actions.contains(.disconnect) { return }
                    }
                } else if length > Self.maxCommandLength {
                    _ = try socket.readExactly(length, timeoutMs: 10_000)
                    actions = [.reply(Array("FAILcommand too long".utf8))]
                } else {
                    actions = session.handleCommand(try socket.readExactly(length, timeoutMs: 10_000))
                }
                for action in actions {
                    switch action {
                    case .reply(let packet):
                        try FastbootTCPFraming.writeFrame(packet, socket: socket)
                    case .stall:
                        try ignoreUntilClosed(socket, buffer: buffer)
                    case .disconnect:
                        return
                    }
                }
            }
        } catch {
            return
        }
    }

    /// A stalled device keeps the connection open and answers nothing, whatever it is sent.
    private func ignoreUntilClosed(_ socket: POSIXSocket, buffer: UnsafeMutableRawBufferPointer) throws {
        while true {
            _ = try socket.read(into: buffer, timeoutMs: nil)
        }
    }
}
