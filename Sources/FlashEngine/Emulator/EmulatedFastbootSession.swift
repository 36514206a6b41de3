#if canImport(Glibc)
import Glibc
#endif

/// The device side of one fastboot conversation, independent of the wire: commands come in as
/// packets, download data as a byte stream, and answers go out as packets.
final class EmulatedFastbootSession {
    enum Action: Equatable {
        case reply([UInt8])
        /// Never answer the current command.
        case stall
        /// Drop the connection now.
        case disconnect
    }

    private let config: EmulatedDeviceConfig
    private let clock: FlashClock
    private let downloadPath: String
    private var downloadFile: Int32 = -1
    private var expected: Int64 = 0
    private var received: Int64 = 0
    private var receivedInConnection: Int64 = 0
    private var downloadStarted: UInt64 = 0
    private var downloaded = false

    static let sparseMagic: [UInt8] = [0x3a, 0xff, 0x26, 0xed]

    init(config: EmulatedDeviceConfig, connectionID: Int, clock: FlashClock = SystemClock()) {
        self.config = config
        self.clock = clock
        downloadPath = config.directory + "/.download-\(getpid())-\(connectionID)"
    }

    deinit {
        if downloadFile >= 0 { Glibc.close(downloadFile) }
        unlink(downloadPath)
    }

    /// True while download data is expected.
    var isReceivingData: Bool { received < expected }

    var bytesStillExpected: Int64 { expected - received }

    func handleCommand(_ packet: [UInt8]) -> [Action] {
        let command = String(decoding: packet, as: UTF8.self)
        if config.faults.stallPrefixes.contains(where: { command.hasPrefix($0) }) {
            return [.stall]
        }
        if let failure = config.faults.failures.first(where: { command.hasPrefix($0.commandPrefix) }) {
            return [fail(failure.message)]
        }
        if let name = command.dropPrefix("getvar:") {
            return getvar(name)
        }
        if let size = command.dropPrefix("download:") {
            return startDownload(size)
        }
        if let name = command.dropPrefix("flash:") {
            return flash(name)
        }
        if let name = command.dropPrefix("erase:") {
            return erase(name)
        }
        switch command {
        case "reboot", "reboot-bootloader", "reboot-fastboot", "continue", "reboot-recovery":
            return [okay()]
        default:
            return [fail("unknown command")]
        }
    }

    /// Takes the next run of download data; answers OKAY once all of it is in.
    func receiveData(_ bytes: UnsafeRawBufferPointer) -> [Action] {
        guard bytes.count > 0 else { return [] }
        guard Int64(bytes.count) <= bytesStillExpected else {
            abandonDownload()
            return [fail("more data than announced")]
        }
        var written = 0
        while written < bytes.count {
            let n = Glibc.write(downloadFile, bytes.baseAddress! + written, bytes.count - written)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                abandonDownload()
                return [fail("cannot store download: \(String(cString: strerror(errno)))")]
            }
            written += n
        }
        received += Int64(bytes.count)
        receivedInConnection += Int64(bytes.count)
        throttle()
        if let limit = config.faults.disconnectAfterBytes, receivedInConnection >= limit {
            return [.disconnect]
        }
        guard received == expected else { return [] }
        Glibc.close(downloadFile)
        downloadFile = -1
        downloaded = true
        return [okay()]
    }

    // MARK: Commands

    private func getvar(_ name: String) -> [Action] {
        if name == "all" {
            let lines = allVariables().map { info("\($0.0): \($0.1)") }
            return lines + [okay()]
        }
        guard let value = variable(name) else { return [fail("unknown variable")] }
        return [okay(value)]
    }

    private func allVariables() -> [(String, String)] {
        ["version", "product", "serialno", "max-download-size", "is-userspace", "secure"].compactMap { name in
            variable(name).map { (name, $0) }
        }
    }

    private func variable(_ name: String) -> String? {
        switch name {
        case "version": return "0.4"
        case "product": return config.product
        case "serialno": return config.serial
        case "max-download-size": return "0x" + String(config.maxDownloadSize, radix: 16)
        case "is-userspace": return "no"
        case "secure": return "no"
        case "current-slot", "slot-count": return nil
        default:
            if name.hasPrefix("has-slot:") || name.hasPrefix("is-logical:") { return "no" }
            if let partition = name.dropPrefix("partition-size:") {
                guard let path = partitionPath(partition), let size = fileSize(path) else { return nil }
                return "0x" + String(size, radix: 16)
            }
            if let partition = name.dropPrefix("partition-type:") {
                return partitionPath(partition) == nil ? nil : "raw"
            }
            return nil
        }
    }

    private func startDownload(_ sizeText: String) -> [Action] {
        guard sizeText.count == 8, let size = Int64(sizeText, radix: 16), size > 0 else {
            return [fail("bad download size")]
        }
        guard size <= config.maxDownloadSize else {
            return [fail("download of \(size) bytes is larger than max-download-size \(config.maxDownloadSize)")]
        }
        abandonDownload()
        downloadFile = open(downloadPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard downloadFile >= 0 else {
            return [fail("cannot store download: \(String(cString: strerror(errno)))")]
        }
        expected = size
        received = 0
        downloadStarted = clock.monotonicNanos()
        return [.reply(Array("DATA".utf8) + Array(sizeText.lowercased().utf8))]
    }

    private func flash(_ partition: String) -> [Action] {
        guard let target = partitionPath(partition) else { return [fail("bad partition name")] }
        guard downloaded else { return [fail("no data downloaded")] }
        let progress = info("writing '\(partition)'...")
        if isSparseDownload() {
            do {
                try SparseExpander.expand(sparseFileAt: downloadPath, into: target)
            } catch let error as FlashError {
                return [progress, fail(error.message)]
            } catch {
                return [progress, fail("\(error)")]
            }
        } else if rename(downloadPath, target) != 0 {
            return [progress, fail("cannot write \(partition): \(String(cString: strerror(errno)))")]
        } else {
            downloaded = false
        }
        return [progress, okay()]
    }

    private func erase(_ partition: String) -> [Action] {
        guard let target = partitionPath(partition) else { return [fail("bad partition name")] }
        let fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return [fail("cannot erase \(partition): \(String(cString: strerror(errno)))")] }
        Glibc.close(fd)
        return [okay()]
    }

    // MARK: Helpers

    private func partitionPath(_ name: String) -> String? {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.".utf8)
        guard !name.isEmpty, name.utf8.count <= 64, !name.hasPrefix("."), name.utf8.allSatisfy(allowed.contains) else { return nil }
        return config.directory + "/\(name).img"
    }

    private func isSparseDownload() -> Bool {
        let fd = open(downloadPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var magic = [UInt8](repeating: 0, count: 4)
        return pread(fd, &magic, 4, 0) == 4 && magic == Self.sparseMagic
    }

    private func fileSize(_ path: String) -> Int64? {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : nil
    }

    private func abandonDownload() {
        if downloadFile >= 0 {
            Glibc.close(downloadFile)
            downloadFile = -1
        }
        expected = 0
        received = 0
        downloaded = false
    }

    /// Sleeps as long as needed to keep the download under the configured speed.
    private func throttle() {
        guard config.speedLimit > 0 else { return }
        let due = downloadStarted + UInt64(Double(received) / Double(config.speedLimit) * 1e9)
        let now = clock.monotonicNanos()
        if due > now {
            usleep(UInt32(min((due - now) / 1000, 10_000_000)))
        }
    }

    private func okay(_ text: String = "") -> Action { .reply(Array(("OKAY" + text).utf8)) }
    private func fail(_ text: String) -> Action { .reply(Array(("FAIL" + text).utf8)) }
    private func info(_ text: String) -> Action { .reply(Array(("INFO" + text).utf8)) }
}
