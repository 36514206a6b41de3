import Foundation

/// Serves an emulated fastboot device over fastboot-over-TCP: one thread per connection, any
/// number of connections one after another (AOSP fastboot opens one per invocation) or at once.
public final class EmulatedDeviceServer: @unchecked Sendable {
    /// Read by every new connection; change it before `start()` (or between connections).
    public var config: EmulatedDeviceConfig {
        get { lock.withLock { storedConfig } }
        set { lock.withLock { storedConfig = newValue } }
    }
    public let host: String
    /// The port actually listened on (the one the kernel picked when asked for port 0).
    public let port: UInt16
    private var storedConfig: EmulatedDeviceConfig
    private let listener: POSIXSocket
    private let lock = PthreadLock()
    private var connections: [Int: POSIXSocket] = [:]
    private var nextConnectionID = 0
    private var started = false
    private var stopped = false
    private let running = DispatchGroup()

    /// Creates the partition folder if missing and listens (host default 127.0.0.1, port
    /// default 5554; port 0 picks a free one). Connections are accepted after `start()`.
    public init(config: EmulatedDeviceConfig, host: String = "127.0.0.1", port: UInt16 = DeviceSelector.defaultTCPPort) throws {
        do {
            try FileManager.default.createDirectory(atPath: config.directory, withIntermediateDirectories: true)
        } catch {
            throw FlashError(.io, "cannot create the partition folder \(config.directory): \(error.localizedDescription)")
        }
        storedConfig = config
        self.host = host
        listener = try POSIXSocket.listen(host: host, port: port)
        self.port = listener.localPort
    }

    deinit {
        listener.close()
    }

    /// "tcp:HOST:PORT", the selector that reaches this device.
    public var address: String { "tcp:\(host):\(port)" }

    /// Number of connections being served right now.
    public var activeConnections: Int { lock.withLock { connections.count } }

    public func start() {
        let go: Bool = lock.withLock {
            guard !started, !stopped else { return false }
            started = true
            return true
        }
        guard go else { return }
        running.enter()
        Thread.detachNewThread { [self] in
            Thread.current.name = threadName("accept")
            // A real device answers on a processor of its own; an emulated one should not wait
            // behind the host's other threads for a core each time a command arrives.
            ThreadTimeSlice.request(ThreadTimeSlice.responsive)
            defer {
                listener.close()
                running.leave()
            }
            acceptLoop()
        }
    }

    /// Stops listening, drops every connection and waits for their threads to end. Safe to call
    /// more than once.
    public func stop() {
        let (open, wasStarted): ([POSIXSocket], Bool) = lock.withLock {
            stopped = true
            return (Array(connections.values), started)
        }
        // Shut down, not close: each socket is closed by the thread that reads it, so no thread
        // ever reads a descriptor number that was closed and reused.
        if wasStarted { listener.shutdown() } else { listener.close() }
        for connection in open { connection.shutdown() }
        running.wait()
    }

    /// "EMU1 device": what `top -H` and `perf` show; Linux keeps the first 15 bytes.
    private func threadName(_ role: String) -> String {
        String("\(config.serial) \(role)".utf8.prefix(15)) ?? role
    }

    private func acceptLoop() {
        while true {
            let socket: POSIXSocket
            do {
                socket = try listener.accept()
            } catch {
                // Stopped, or out of descriptors or memory for a moment: retry unless stopped.
                if lock.withLock({ stopped }) { return }
                usleep(50_000)
                continue
            }
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
                Thread.current.name = threadName("device")
                ThreadTimeSlice.request(ThreadTimeSlice.responsive)
                defer {
                    lock.withLock { _ = connections.removeValue(forKey: id) }
                    socket.close()
                    running.leave()
                }
                serve(socket)
            }
        }
    }

    private func serve(_ socket: POSIXSocket) {
        do {
            try FastbootTCPFraming.serverHandshake(socket: socket)
        } catch {
            return
        }
        let session = EmulatedFastbootSession(config: config)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        do {
            while true {
                let length = try FastbootTCPFraming.readFrameLength(socket: socket, timeoutMs: nil)
                var actions: [EmulatedFastbootSession.Action] = []
                if session.isReceivingData {
                    if let refusal = session.beginDataFrame(length: length) {
                        try discard(length, from: socket, buffer: buffer)
                        actions = [refusal]
                    } else {
                        let chunk = min(session.preferredDataChunk, buffer.count)
                        var remaining = length
                        while remaining > 0 {
                            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(remaining, chunk)])
                            let n = try socket.read(into: piece, timeoutMs: nil)
                            remaining -= n
                            actions += session.receiveData(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                            if actions.contains(.disconnect) {
                                socket.abort()
                                return
                            }
                            if actions.contains(.stopReading) {
                                try socket.waitUntilClosed()
                                return
                            }
                        }
                    }
                } else if length > EmulatedFastbootSession.maxCommandLength {
                    try discard(length, from: socket, buffer: buffer)
                    actions = [.reply(Array("FAILcommand too long".utf8))]
                } else {
                    actions = session.handleCommand(try socket.readExactly(length, timeoutMs: 10_000))
                }
                for action in actions {
                    switch action {
                    case .reply(let packet):
                        try FastbootTCPFraming.writeFrame(packet, socket: socket, timeoutMs: 10_000)
                    case .stall:
                        try ignoreUntilClosed(socket, buffer: buffer)
                    case .disconnect:
                        socket.abort()
                        return
                    case .stopReading:
                        try socket.waitUntilClosed()
                        return
                    }
                }
            }
        } catch {
            return
        }
    }

    private func discard(_ count: Int, from socket: POSIXSocket, buffer: UnsafeMutableRawBufferPointer) throws {
        var remaining = count
        while remaining > 0 {
            remaining -= try socket.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(remaining, buffer.count)]), timeoutMs: 10_000)
        }
    }

    /// A stalled device keeps the connection open and answers nothing, whatever it is sent.
    private func ignoreUntilClosed(_ socket: POSIXSocket, buffer: UnsafeMutableRawBufferPointer) throws {
        while true {
            _ = try socket.read(into: buffer, timeoutMs: nil)
        }
    }
}
