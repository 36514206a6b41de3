#if canImport(Glibc)
import Glibc
#endif

/// How long the host waits for the device. Every INFO or TEXT restarts the wait.
public struct FastbootTimeouts: Sendable {
    /// getvar, download handshake, reboot; and the longest the device may take no download data.
    public var commandMs: Int
    /// flash and erase, where the device writes storage before answering.
    public var writeMs: Int

    public init(commandMs: Int = 10_000, writeMs: Int = 120_000) {
        self.commandMs = commandMs
        self.writeMs = writeMs
    }
}

/// The host side of the fastboot protocol over any transport.
public final class FastbootClient {
    /// Longest command the protocol allows.
    static let maxCommandLength = 4096
    /// Longest answer we accept from a device.
    static let maxResponseLength = 4096

    public let transport: FastbootTransport
    public let timeouts: FastbootTimeouts
    private let onDeviceMessage: (String) -> Void
    private var pendingText = ""
    /// While set, INFO lines are collected here instead of passed on (`getvar:all`).
    private var collectedInfo: [String]?

    /// `onDeviceMessage` receives INFO lines and TEXT output, for showing to the user.
    public init(transport: FastbootTransport, timeouts: FastbootTimeouts = FastbootTimeouts(), onDeviceMessage: @escaping (String) -> Void = { _ in }) {
        self.transport = transport
        self.timeouts = timeouts
        self.onDeviceMessage = onDeviceMessage
    }

    public func getvar(_ name: String) throws -> String {
        try command("getvar:\(name)", timeoutMs: timeouts.commandMs)
    }

    /// Sends `size` bytes from `source` as one download: `download:%08x`, the data, then OKAY.
    public func download(_ source: ByteStream, size: Int64, onAcknowledged: (Int64) -> Void) throws {
        guard size > 0, size <= Int64(UInt32.max) else {
            throw FlashError(.image, "a download must be 1 byte to 4 GiB, not \(size) bytes")
        }
        try send("download:" + hex8(UInt32(size)))
        switch try awaitResponse(for: "download", timeoutMs: timeouts.commandMs) {
        case .data(let accepted) where Int64(accepted) == size:
            break
        case .data(let accepted):
            throw FlashError(.protocolViolation, "\(transport.peerDescription) offered to take \(accepted) bytes when asked for \(size)")
        case .okay:
            throw FlashError(.protocolViolation, "\(transport.peerDescription) answered OKAY instead of DATA to download")
        default:
            throw FlashError(.protocolViolation, "\(transport.peerDescription) answered download unexpectedly")
        }
        try ThreadTimeSlice.withDefault {
            try transport.writeStream(source, totalBytes: size, timeoutMs: timeouts.commandMs, onAcknowledged: onAcknowledged)
        }
        // A cancel that padded the download waits for this OKAY: it leaves the device in step.
        _ = try expectOkay(for: "download", timeoutMs: timeouts.writeMs, cutShortOnCancel: false)
        onAcknowledged(size)
    }

    public func flash(partition: String) throws {
        _ = try command("flash:\(partition)", timeoutMs: timeouts.writeMs)
    }

    public func erase(partition: String) throws {
        _ = try command("erase:\(partition)", timeoutMs: timeouts.writeMs)
    }

    public func reboot() throws {
        _ = try command("reboot", timeoutMs: timeouts.commandMs)
    }

    public func rebootBootloader() throws {
        _ = try command("reboot-bootloader", timeoutMs: timeouts.commandMs)
    }

    /// Where `reboot` may take a device, as AOSP fastboot names them.
    public enum RebootTarget: String, CaseIterable, Sendable {
        case system, bootloader, fastboot, recovery

        var command: String {
            switch self {
            case .system: return "reboot"
            case .bootloader: return "reboot-bootloader"
            case .fastboot: return "reboot-fastboot"
            case .recovery: return "reboot-recovery"
            }
        }
    }

    public func reboot(into target: RebootTarget) throws {
        _ = try command(target.command, timeoutMs: timeouts.commandMs)
    }

    /// `getvar:all`: each variable the device lists, in its order. A line `partition-size:boot:0x1000`
    /// is the variable `partition-size:boot`: the value is after the last colon.
    public func allVariables() throws -> [(name: String, value: String)] {
        try collectingInfo { try getvar("all") }.lines.map { line in
            guard let colon = line.lastIndex(of: ":") else { return (line, "") }
            return (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingWhitespace)
        }
    }

    public func setActive(slot: String) throws {
        _ = try command("set_active:\(slot)", timeoutMs: timeouts.commandMs)
    }

    /// `oem TEXT` or `flashing TEXT`: the device's INFO lines, then its OKAY payload if any.
    public func vendorCommand(_ text: String) throws -> [String] {
        let (payload, lines) = try collectingInfo { try command(text, timeoutMs: timeouts.writeMs) }
        return payload.isEmpty ? lines : lines + [payload]
    }

    /// Sends the image at `path` and boots it from RAM (`boot`); nothing is written to storage.
    public func boot(imageAt path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw FlashError(.image, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG, info.st_size > 0, access(path, R_OK) == 0 else {
            throw FlashError(.image, "\(path) is not a readable, non-empty file")
        }
        let reader = SegmentReader(path: path, segments: [.file(offset: 0, length: Int64(info.st_size))])
        defer { reader.close() }
        try download(reader, size: Int64(info.st_size)) { _ in }
        _ = try command("boot", timeoutMs: timeouts.commandMs)
    }

    private func collectingInfo<T>(_ body: () throws -> T) throws -> (T, lines: [String]) {
        collectedInfo = []
        defer { collectedInfo = nil }
        let result = try body()
        return (result, collectedInfo ?? [])
    }

    /// Sends a command and returns the payload of its OKAY.
    @discardableResult
    public func command(_ text: String, timeoutMs: Int) throws -> String {
        try send(text)
        return try expectOkay(for: text, timeoutMs: timeoutMs)
    }

    private func send(_ command: String) throws {
        let bytes = Array(command.utf8)
        guard bytes.count <= Self.maxCommandLength else {
            throw FlashError(.protocolViolation, "command too long for fastboot: \(command.prefix(40))...")
        }
        try transport.write(bytes, timeoutMs: timeouts.commandMs)
    }

    private func expectOkay(for command: String, timeoutMs: Int, cutShortOnCancel: Bool = true) throws -> String {
        switch try awaitResponse(for: command, timeoutMs: timeoutMs, cutShortOnCancel: cutShortOnCancel) {
        case .okay(let payload):
            return payload
        case .data:
            throw FlashError(.protocolViolation, "\(transport.peerDescription) asked for data in answer to \(command)")
        default:
            throw FlashError(.protocolViolation, "\(transport.peerDescription) answered \(command) unexpectedly")
        }
    }

    /// Reads until OKAY, FAIL or DATA; INFO and TEXT are passed on and restart the timeout.
    private func awaitResponse(for command: String, timeoutMs: Int, cutShortOnCancel: Bool = true) throws -> FastbootResponse {
        while true {
            let packet: [UInt8]
            do {
                packet = try transport.read(maxLength: Self.maxResponseLength, timeoutMs: timeoutMs, cutShortOnCancel: cutShortOnCancel)
            } catch let error as FlashError where error.kind == .timeout {
                throw FlashError(.timeout, "\(transport.peerDescription) did not answer \(command) within \(timeoutMs / 1000) s")
            }
            let response = try FastbootResponse.parse(packet, from: transport.peerDescription)
            switch response {
            case .info(let line):
                flushText()
                if collectedInfo != nil { collectedInfo?.append(line) } else { onDeviceMessage(line) }
            case .text(let chunk):
                pendingText += chunk
                while let newline = pendingText.firstIndex(of: "\n") {
                    onDeviceMessage(String(pendingText[..<newline]))
                    pendingText = String(pendingText[pendingText.index(after: newline)...])
                }
            case .fail(let message):
                flushText()
                throw FlashError(.deviceFailed, "\(transport.peerDescription) refused \(command): \(message.isEmpty ? "FAIL" : message)")
            case .okay, .data:
                flushText()
                return response
            }
        }
    }

    private func flushText() {
        if !pendingText.isEmpty {
            onDeviceMessage(pendingText)
            pendingText = ""
        }
    }
}

func hex8(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 8 - digits.count) + digits
}
