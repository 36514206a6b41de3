import Foundation
import Synchronization

/// Serves an emulated fastboot device over fastboot-over-TCP: one thread per connection, any
/// number of connections one after another (AOSP fastboot opens one per invocation) or at once.
public final class EmulatedDeviceServer: @unchecked Sendable {
    /// Read by every new connection; change it before `start()` (or between connections).
    public var config: EmulatedDeviceConfig {
        get { state.withLock { $0.config } }
        set { state.withLock { $0.config = newValue } }
    }
    public let host: String
    /// What the device keeps from one connection to the next (a reboot ends one).
    public let device: EmulatedDeviceState
    /// The port actually listened on (the one the kernel picked when asked for port 0).
    public let port: UInt16
    private let listener: POSIXSocket
    private let state: Mutex<State>

    private struct State {
        var config: EmulatedDeviceConfig
        var connections: [Int: POSIXSocket] = [:]
        var nextConnectionID = 0
        var stopped = false
        var acceptThread: WorkerThread?
        /// The threads of the connections being served, by connection.
        var connectionThreads: [Int: WorkerThread] = [:]
    }

    /// Creates the partition folder if missing and listens (host default 127.0.0.1, port
    /// default 5554; port 0 picks a free one). Connections are accepted after `start()`.
    public init(config: EmulatedDeviceConfig, host: String = "127.0.0.1", port: UInt16 = DeviceSelector.defaultTCPPort) throws {
        do {
            try FileManager.default.createDirectory(atPath: config.directory, withIntermediateDirectories: true)
        } catch {
            throw FlashError(.io, "cannot create the partition folder \(config.directory): \(error.localizedDescription)")
        }
        state = Mutex(State(config: config))
        device = EmulatedDeviceState(slotted: config.slotted)
        self.host = host
        listener = try POSIXSocket.listen(host: host, port: port)
        if config.speedLimit > 0 {
            // A slow device's bottleneck is its link, not megabytes queued in its kernel: without
            // this, loopback's buffer autotuning would let the host hand over seconds of data
            // the device has not read.
            listener.setReceiveBufferSize(EmulatedFastbootSession.dataChunk(speedLimit: config.speedLimit))
        }
        self.port = listener.localPort
    }

    deinit {
        listener.close()
    }

    /// "tcp:HOST:PORT", the selector that reaches this device.
    public var address: String { "tcp:\(host):\(port)" }

    /// Number of connections being served right now.
    public var activeConnections: Int { state.withLock { $0.connections.count } }

    public func start() throws {
        try state.withLock { state in
            guard state.acceptThread == nil, !state.stopped else { return }
            // A real device answers on a processor of its own; an emulated one should not wait
            // behind the host's other threads for a core each time a command arrives.
            state.acceptThread = try WorkerThread.start(name: threadName(state.config, "accept"), responsive: true) { [self] in
                defer { listener.close() }
                acceptLoop()
            }
        }
    }

    /// Stops listening, drops every connection and waits for their threads to end. Safe to call
    /// more than once.
    public func stop() {
        let (open, wasStarted): ([POSIXSocket], Bool) = state.withLock { state in
            state.stopped = true
            return (Array(state.connections.values), state.acceptThread != nil)
        }
        // Shut down, not close: each socket is closed by the thread that reads it, so no thread
        // ever reads a descriptor number that was closed and reused.
        if wasStarted { listener.shutdown() } else { listener.close() }
        for connection in open { connection.shutdown() }
        // No connection is added once stopped: after the accept thread, the list is complete.
        state.withLock { $0.acceptThread }?.join()
        state.withLock { Array($0.connectionThreads.values) }.forEach { $0.join() }
    }

    /// "EMU1 device": what `top -H` and `perf` show; Linux keeps the first 15 bytes.
    private func threadName(_ config: EmulatedDeviceConfig, _ role: String) -> String {
        String("\(config.serial) \(role)".utf8.prefix(15)) ?? role
    }

    private func acceptLoop() {
        while true {
            let socket: POSIXSocket
            do {
                socket = try listener.accept()
            } catch {
                // Stopped, or out of descriptors or memory for a moment: retry unless stopped.
                if state.withLock({ $0.stopped }) { return }
                usleep(50_000)
                continue
            }
            let accepted: Bool = state.withLock { state in
                guard !state.stopped else { return false }
                state.nextConnectionID += 1
                let id = state.nextConnectionID
                state.connections[id] = socket
                do {
                    state.connectionThreads[id] = try WorkerThread.start(name: threadName(state.config, "device"), responsive: true) { [self] in
                        defer {
                            socket.close()
                            self.state.withLock { state in
                                state.connections.removeValue(forKey: id)
                                state.connectionThreads.removeValue(forKey: id)
                            }
                        }
                        serve(socket)
                    }
                } catch {
                    // No thread to serve it: the host sees the connection closed, as from a busy device.
                    state.connections.removeValue(forKey: id)
                    socket.close()
                }
                return true
            }
            guard accepted else {
                socket.close()
                return
            }
        }
    }

    private func serve(_ socket: POSIXSocket) {
        do {
            try FastbootTCPFraming.serverHandshake(socket: socket)
        } catch {
            return
        }
        let session = EmulatedFastbootSession(config: config, device: device)
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
                    case .reboot:
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
