#if canImport(Glibc)
import Glibc
#endif

/// The device side of one fastboot conversation, independent of the wire: the host's messages
/// come in as frames (one USB bulk OUT transfer, one TCP frame), answers go out as frames.
///
/// In the command phase every frame is one command. After `download:%08x` (answered
/// `DATA%08x`) frames are download data, taken as a byte stream of any split until the announced
/// size is in (a frame that goes past it is answered FAIL), then OKAY. Download data goes to a
/// temporary file inside the partition folder, never into memory.
///
/// One session serves one connection from one thread.
public final class EmulatedFastbootSession {
    public enum Action: Equatable, Sendable {
        /// Send this packet to the host (one frame / one bulk IN transfer).
        case reply([UInt8])
        /// Never answer the current command (and nothing after it); keep the connection open.
        case stall
        /// Drop the connection now.
        case disconnect
        /// Take nothing more from the host (its sends block) and keep the connection open.
        case stopReading
        /// The device reboots: the connection ends (after the replies before it).
        case reboot
    }

    private let config: EmulatedDeviceConfig
    /// What outlives this connection (mode, slot, lock, logical partitions).
    public let device: EmulatedDeviceState
    private let sleep: (UInt64) -> Void
    private var downloadPath: String?
    private var downloadFile: Int32 = -1
    private var expected: Int64 = 0
    private var received: Int64 = 0
    private var receivedInConnection: Int64 = 0
    /// The speed limit: bytes are taken at most at its pace, with a burst of one data chunk.
    private let bus: TokenBucket?
    private var downloaded = false
    private var stalled = false

    static let sparseMagic: [UInt8] = [0x3a, 0xff, 0x26, 0xed]
    /// Longest command accepted; a longer command-phase frame is answered FAIL.
    public static let maxCommandLength = 4096

    /// `device`: the state the device's earlier connections left (a new device without it).
    /// `sleep` waits the given number of nanoseconds (the speed limit uses it; tests replace it).
    public init(config: EmulatedDeviceConfig, device: EmulatedDeviceState? = nil, clock: any FlashClock = SystemClock(), sleep: @escaping (UInt64) -> Void = EmulatedFastbootSession.systemSleep) {
        self.config = config
        self.device = device ?? EmulatedDeviceState(slotted: config.slotted)
        self.sleep = sleep
        bus = config.speedLimit > 0
            ? TokenBucket(bytesPerSecond: config.speedLimit, burst: Int64(Self.dataChunk(speedLimit: config.speedLimit)), clock: clock)
            : nil
    }

    deinit {
        discardDownloadFile()
    }

    public static func systemSleep(_ nanoseconds: UInt64) {
        var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR {
            request = remaining
        }
    }

    /// True while download data is expected: the next frames are data, not commands.
    public var isReceivingData: Bool { received < expected }

    /// Download bytes still to come in the current data phase (0 in the command phase).
    public var bytesStillExpected: Int64 { expected - received }

    /// True once a fault made the device stop answering.
    public var isStalled: Bool { stalled }

    /// Takes one whole frame from the host, whatever the phase.
    public func receiveFrame(_ frame: [UInt8]) -> [Action] {
        guard !stalled else { return [] }
        guard isReceivingData else { return handleCommand(frame) }
        if let refusal = beginDataFrame(length: frame.count) { return [refusal] }
        return frame.withUnsafeBytes { receiveData($0) }
    }

    /// Call when a data-phase frame of `length` bytes starts; answers FAIL (and ends the
    /// download) when it would go past the announced size. The caller then drops its bytes.
    public func beginDataFrame(length: Int) -> Action? {
        guard Int64(length) > bytesStillExpected else { return nil }
        let announced = expected
        abandonDownload()
        return fail("data frame of \(length) bytes goes past the announced download size (\(announced) bytes)")
    }

    /// Takes one command-phase frame.
    public func handleCommand(_ packet: [UInt8]) -> [Action] {
        guard !stalled else { return [] }
        // A zero-length packet is not a command (on USB it is a ZLP): ignore it.
        guard !packet.isEmpty else { return [] }
        guard packet.count <= Self.maxCommandLength else {
            return [fail("command too long")]
        }
        let command = String(decoding: packet, as: UTF8.self)
        if config.faults.stallPrefixes.contains(where: { command.hasPrefix($0) }) {
            stalled = true
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
            return ifUnlocked { flash(name) }
        }
        if let name = command.dropPrefix("erase:") {
            return ifUnlocked { erase(name) }
        }
        if let slot = command.dropPrefix("set_active:") {
            return setActive(slot)
        }
        if let text = command.dropPrefix("oem ") {
            return oem(text)
        }
        if let text = command.dropPrefix("flashing ") {
            return flashing(text)
        }
        if let spec = command.dropPrefix("create-logical-partition:") {
            return inFastbootd { createLogical(spec) }
        }
        if let spec = command.dropPrefix("resize-logical-partition:") {
            return inFastbootd { resizeLogical(spec) }
        }
        if let name = command.dropPrefix("delete-logical-partition:") {
            return inFastbootd { deleteLogical(name) }
        }
        if let spec = command.dropPrefix("update-super:") {
            return inFastbootd { ifUnlocked { updateSuper(spec) } }
        }
        switch command {
        case "boot":
            return bootFromRAM()
        case "reboot", "continue", "reboot-recovery", "reboot-bootloader":
            return reboot(into: .bootloader)
        case "reboot-fastboot":
            return reboot(into: .fastbootd)
        default:
            return [fail("unknown command")]
        }
    }

    /// Takes the next run of download data (any part of a data frame); answers OKAY once all of
    /// it is in. More than `bytesStillExpected` is answered FAIL.
    public func receiveData(_ bytes: UnsafeRawBufferPointer) -> [Action] {
        guard !stalled, bytes.count > 0 else { return [] }
        guard Int64(bytes.count) <= bytesStillExpected else {
            return [beginDataFrame(length: bytes.count)!]
        }
        var usable = bytes
        var fault: Action?
        if let limit = config.faults.disconnectAfterBytes, receivedInConnection + Int64(bytes.count) >= limit {
            usable = UnsafeRawBufferPointer(rebasing: bytes[0..<Int(max(0, limit - receivedInConnection))])
            fault = .disconnect
        } else if let limit = config.faults.stopReadingAfterBytes, receivedInConnection + Int64(bytes.count) >= limit {
            usable = UnsafeRawBufferPointer(rebasing: bytes[0..<Int(max(0, limit - receivedInConnection))])
            fault = .stopReading
        }
        var written = 0
        while written < usable.count {
            let n = Glibc.write(downloadFile, usable.baseAddress! + written, usable.count - written)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let reason = String(cString: strerror(errno))
                abandonDownload()
                return [fail("cannot store download: \(reason)")]
            }
            written += n
        }
        received += Int64(usable.count)
        receivedInConnection += Int64(usable.count)
        if let fault {
            abandonDownload()
            stalled = true
            return [fault]
        }
        throttle(usable.count)
        guard received == expected else { return [] }
        Glibc.close(downloadFile)
        downloadFile = -1
        downloaded = true
        return [okay()]
    }

    /// How many bytes to take per `receiveData` call so the speed limit is applied smoothly.
    public var preferredDataChunk: Int {
        Self.dataChunk(speedLimit: config.speedLimit)
    }

    static func dataChunk(speedLimit: Int64) -> Int {
        guard speedLimit > 0 else { return 1 << 20 }
        return Int(min(max(speedLimit / 50, 4096), 1 << 20))
    }

    // MARK: Commands

    private func getvar(_ name: String) -> [Action] {
        if name == "all" {
            return allVariables().map { info("\($0.0):\($0.1)") } + [okay()]
        }
        guard let value = variable(name) else { return [fail("unknown variable")] }
        return [okay(value)]
    }

    private func allVariables() -> [(String, String)] {
        var names = [
            "version", "version-bootloader", "version-baseband", "product", "serialno", "max-download-size",
            "is-userspace", "secure", "unlocked", "slot-count", "current-slot", "super-partition-name",
        ]
        for partition in partitionNames() {
            names += ["partition-size:\(partition)", "partition-type:\(partition)", "is-logical:\(partition)"]
        }
        for partition in Set(partitionNames().map(baseName)).sorted() {
            names.append("has-slot:\(partition)")
        }
        return names.compactMap { name in variable(name).map { (name, $0) } }
    }

    private func variable(_ name: String) -> String? {
        switch name {
        case "version": return config.version
        case "version-bootloader": return config.versionBootloader
        case "version-baseband": return config.versionBaseband
        case "product": return config.product
        case "serialno": return config.serial
        case "max-download-size": return hex(config.maxDownloadSize)
        case "is-userspace": return device.mode == .fastbootd ? "yes" : "no"
        case "secure": return "no"
        case "unlocked": return device.isUnlocked ? "yes" : "no"
        case "slot-count": return config.slotted ? "2" : nil
        case "current-slot": return config.slotted ? device.currentSlot : nil
        case "super-partition-name": return "super"
        default:
            if let partition = name.dropPrefix("has-slot:") {
                return config.slotted && !EmulatedDeviceConfig.unslottedPartitions.contains(partition) ? "yes" : "no"
            }
            if let partition = name.dropPrefix("is-logical:") {
                return device.logicalPartitions[partition] != nil ? "yes" : "no"
            }
            if let partition = name.dropPrefix("partition-size:") {
                guard let path = partitionPath(partition), let size = fileSize(path) else { return nil }
                return hex(size)
            }
            if let partition = name.dropPrefix("partition-type:") {
                guard let path = partitionPath(partition), fileSize(path) != nil else { return nil }
                return "raw"
            }
            return nil
        }
    }

    private func startDownload(_ sizeText: String) -> [Action] {
        guard (1...16).contains(sizeText.utf8.count), sizeText.utf8.allSatisfy(Self.isHexDigit),
              let size = Int64(sizeText, radix: 16), size > 0 else {
            return [fail("bad download size '\(sizeText)'")]
        }
        guard size <= config.maxDownloadSize else {
            abandonDownload()
            return [fail("download of \(size) bytes is larger than max-download-size (\(config.maxDownloadSize) bytes)")]
        }
        // Whatever was downloaded before and not flashed is discarded.
        abandonDownload()
        do {
            downloadFile = try openDownloadFile()
        } catch let error as FlashError {
            return [fail(error.message)]
        } catch {
            return [fail("cannot store download: \(error)")]
        }
        expected = size
        received = 0
        return [.reply(Array("DATA".utf8) + Array(hex8(size).utf8))]
    }

    private func flash(_ partition: String) -> [Action] {
        guard let target = partitionPath(partition) else { return [fail("bad partition name '\(partition)'")] }
        guard downloaded, let source = downloadPath else { return [fail("no data downloaded")] }
        if let size = device.logicalPartitions[partition] {
            guard device.mode == .fastbootd else {
                return [fail("'\(partition)' is a logical partition: flash it from fastbootd (reboot fastboot)")]
            }
            let length = isSparse(source) ? ((try? SparseImage.open(path: source))?.expandedSize ?? 0) : (fileSize(source) ?? 0)
            guard length <= size else {
                return [fail("'\(partition)' holds \(size) bytes, the image \(length): resize it first")]
            }
        }
        let progress = info("writing '\(partition)'...")
        do {
            if isSparse(source) {
                let image = try SparseImage.open(path: source)
                try SparseExpander.expand(image, into: target)
                try truncateIfRegular(target, to: image.expandedSize)
            } else {
                try writeRaw(from: source, to: target)
            }
        } catch let error as FlashError {
            return [progress, fail(error.message)]
        } catch {
            return [progress, fail("cannot write '\(partition)': \(error)")]
        }
        return [progress, okay()]
    }

    private func erase(_ partition: String) -> [Action] {
        guard let target = partitionPath(partition) else { return [fail("bad partition name '\(partition)'")] }
        let fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return [fail("cannot erase '\(partition)': \(String(cString: strerror(errno)))")] }
        defer { Glibc.close(fd) }
        do {
            try truncateIfRegular(fd: fd, path: target, to: 0)
        } catch let error as FlashError {
            return [fail(error.message)]
        } catch {
            return [fail("cannot erase '\(partition)': \(error)")]
        }
        return [okay()]
    }

    // MARK: Slots, lock, modes

    /// `boot_a` -> `boot`.
    private func baseName(_ partition: String) -> String {
        guard config.slotted, partition.hasSuffix("_a") || partition.hasSuffix("_b") else { return partition }
        return String(partition.dropLast(2))
    }

    private func ifUnlocked(_ body: () -> [Action]) -> [Action] {
        device.isUnlocked ? body() : [fail("Flashing is not allowed in Lock State")]
    }

    private func inFastbootd(_ body: () -> [Action]) -> [Action] {
        device.mode == .fastbootd ? body() : [fail("logical partitions are changed from fastbootd (reboot fastboot)")]
    }

    private func setActive(_ slot: String) -> [Action] {
        guard config.slotted else { return [fail("this device has no slots")] }
        guard slot == "a" || slot == "b" else { return [fail("no slot '\(slot)': slots are a and b")] }
        device.update { $0.currentSlot = slot }
        return [okay()]
    }

    private func oem(_ text: String) -> [Action] {
        switch text {
        case "device-info":
            return [info("Device unlocked: \(device.isUnlocked)"), info("Current slot: \(config.slotted ? device.currentSlot : "none")"), okay()]
        default:
            return [fail("unknown oem command '\(text)'")]
        }
    }

    private func flashing(_ text: String) -> [Action] {
        switch text {
        case "lock", "unlock":
            device.update { $0.unlocked = text == "unlock" }
            return [okay()]
        case "get_unlock_ability":
            return [info("get_unlock_ability: 1"), okay()]
        default:
            return [fail("unknown flashing command '\(text)'")]
        }
    }

    /// `NAME:SIZE` (SIZE in decimal, as AOSP fastboot sends it).
    private func logicalSpec(_ spec: String) -> (name: String, size: Int64)? {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, partitionPath(parts[0]) != nil, let size = Int64(parts[1]), size >= 0 else { return nil }
        return (parts[0], size)
    }

    private func createLogical(_ spec: String) -> [Action] {
        guard let (name, size) = logicalSpec(spec) else { return [fail("expected NAME:SIZE, got '\(spec)'")] }
        guard device.logicalPartitions[name] == nil else { return [fail("'\(name)' exists")] }
        return sizeLogical(name, size)
    }

    private func resizeLogical(_ spec: String) -> [Action] {
        guard let (name, size) = logicalSpec(spec) else { return [fail("expected NAME:SIZE, got '\(spec)'")] }
        guard device.logicalPartitions[name] != nil else { return [fail("no logical partition '\(name)'")] }
        return sizeLogical(name, size)
    }

    private func sizeLogical(_ name: String, _ size: Int64) -> [Action] {
        guard let path = partitionPath(name) else { return [fail("bad partition name '\(name)'")] }
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0, ftruncate(fd, off_t(size)) == 0 else {
            if fd >= 0 { Glibc.close(fd) }
            return [fail("cannot size '\(name)': \(String(cString: strerror(errno)))")]
        }
        Glibc.close(fd)
        device.update { $0.logical[name] = size }
        return [okay()]
    }

    /// `update-super:super[:wipe]` after a download of super metadata (`super_empty.img`): the
    /// logical partitions become those it lists; those already there keep their contents unless
    /// `wipe`, new ones are empty, and the others are deleted.
    private func updateSuper(_ spec: String) -> [Action] {
        let parts = spec.split(separator: ":").map(String.init)
        guard let name = parts.first, name == "super", parts.count <= 2, parts.count == 1 || parts[1] == "wipe" else {
            return [fail("expected update-super:super[:wipe], got '\(spec)'")]
        }
        guard downloaded, let source = downloadPath, let size = fileSize(source), size <= 1 << 20 else {
            return [fail("download the super metadata (super_empty.img) first")]
        }
        let metadata: LogicalPartitionMetadata
        do {
            let fd = open(source, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return [fail("cannot read the download")] }
            defer { Glibc.close(fd) }
            var bytes = [UInt8](repeating: 0, count: Int(size))
            guard pread(fd, &bytes, bytes.count, 0) == bytes.count else { return [fail("cannot read the download")] }
            metadata = try LogicalPartitionMetadata(parsing: bytes, source: "the download")
        } catch let error as FlashError {
            return [fail(error.message)]
        } catch {
            return [fail("\(error)")]
        }
        let wanted = Set(metadata.partitions.map(\.name))
        for old in device.logicalPartitions.keys where !wanted.contains(old) {
            _ = deleteLogical(old)
        }
        for partition in metadata.partitions.map(\.name) {
            let keep = parts.count == 1 ? device.logicalPartitions[partition] : nil
            if case let actions = sizeLogical(partition, keep ?? 0), actions != [okay()] { return actions }
        }
        return [okay()]
    }

    private func deleteLogical(_ name: String) -> [Action] {
        guard device.logicalPartitions[name] != nil, let path = partitionPath(name) else { return [fail("no logical partition '\(name)'")] }
        unlink(path)
        device.update { $0.logical[name] = nil }
        return [okay()]
    }

    /// `boot`: the downloaded image is started from RAM (kept as `.ram-boot.img`, what was booted),
    /// which ends fastboot.
    private func bootFromRAM() -> [Action] {
        guard downloaded, let source = downloadPath else { return [fail("no data downloaded")] }
        do {
            try writeRaw(from: source, to: config.directory + "/.ram-boot.img")
        } catch {
            return [fail("cannot boot: \(error)")]
        }
        device.update { $0.reboots += 1; $0.mode = .bootloader }
        return [okay(), .reboot]
    }

    private func reboot(into mode: EmulatedDeviceState.Mode) -> [Action] {
        device.update { $0.reboots += 1; $0.mode = mode }
        return [okay(), .reboot]
    }

    // MARK: Partition files

    /// A new partition file takes the downloaded file's place (no copy); an existing one (which
    /// may be a symlink, a hard link or open elsewhere) is overwritten in place from offset 0 and
    /// cut to the data's length.
    private func writeRaw(from source: String, to target: String) throws {
        var info = stat()
        if lstat(target, &info) != 0 && errno == ENOENT {
            if rename(source, target) == 0 {
                // The download buffer became the partition: it cannot be flashed a second time.
                downloadPath = nil
                downloaded = false
                return
            }
        }
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw FlashError(.io, "cannot read the download: \(String(cString: strerror(errno)))") }
        defer { Glibc.close(input) }
        let output = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw FlashError(.io, "cannot open \(target): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(output) }
        let length = Int64(lseek(input, 0, SEEK_END))
        _ = lseek(input, 0, SEEK_SET)
        var copied: Int64 = 0
        var useSendfile = true
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        while copied < length {
            let wanted = Int(min(Int64(1 << 30), length - copied))
            if useSendfile {
                // In-kernel copy; it writes at the output's file position, which follows `copied`.
                var inOffset = off_t(copied)
                let n = sendfile(output, input, &inOffset, wanted)
                if n > 0 {
                    copied += Int64(n)
                    continue
                }
                if n < 0 && errno == EINTR { continue }
                // Not supported between these two files (or no progress): copy through a buffer.
                useSendfile = false
                continue
            }
            let n = pread(input, buffer.baseAddress!, min(buffer.count, wanted), off_t(copied))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw FlashError(.io, "cannot read the download: \(n == 0 ? "unexpected end" : String(cString: strerror(errno)))") }
            var done = 0
            while done < n {
                let w = pwrite(output, buffer.baseAddress! + done, n - done, off_t(copied) + off_t(done))
                if w < 0 && errno == EINTR { continue }
                guard w > 0 else { throw FlashError(.io, "cannot write \(target): \(String(cString: strerror(errno)))") }
                done += w
            }
            copied += Int64(n)
        }
        try truncateIfRegular(fd: output, path: target, to: length)
    }

    private func truncateIfRegular(_ path: String, to length: Int64) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FlashError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        try truncateIfRegular(fd: fd, path: path, to: length)
    }

    /// Cuts a regular file to `length`; a block device keeps its size (it is the partition).
    private func truncateIfRegular(fd: Int32, path: String, to length: Int64) throws {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw FlashError(.io, "cannot inspect \(path): \(String(cString: strerror(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG, Int64(info.st_size) != length else { return }
        guard ftruncate(fd, off_t(length)) == 0 else {
            throw FlashError(.io, "cannot set the size of \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Names of the partitions that exist now (files `NAME.img` in the folder), sorted.
    private func partitionNames() -> [String] {
        guard let dir = opendir(config.directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if let partition = name.dropSuffix(".img"), partitionPath(partition) != nil {
                names.append(partition)
            }
        }
        return names.sorted()
    }

    /// `directory/NAME.img` for a valid name ([A-Za-z0-9_.-], not starting with a dot), else nil.
    private func partitionPath(_ name: String) -> String? {
        guard !name.isEmpty, name.utf8.count <= 64, !name.hasPrefix("."),
              name.utf8.allSatisfy(Self.isPartitionNameByte) else { return nil }
        return config.directory + "/\(name).img"
    }

    private static func isPartitionNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"):
            return true
        default:
            return false
        }
    }

    // MARK: Download file

    /// The download buffer: a temporary file in the partition folder (so a raw flash of a new
    /// partition is a rename), reused by later downloads of this session and removed at the end.
    private func openDownloadFile() throws -> Int32 {
        if let path = downloadPath {
            let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
            if fd >= 0 { return fd }
            downloadPath = nil
        }
        var template = Array((config.directory + "/.download-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw FlashError(.io, "cannot store download in \(config.directory): \(String(cString: strerror(errno)))")
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        // It may become a partition file by rename: give it a partition file's mode.
        _ = fchmod(fd, 0o644)
        downloadPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return fd
    }

    private func isSparse(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var magic = [UInt8](repeating: 0, count: 4)
        return pread(fd, &magic, 4, 0) == 4 && magic == Self.sparseMagic
    }

    private func fileSize(_ path: String) -> Int64? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        if (info.st_mode & S_IFMT) == S_IFBLK {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return nil }
            defer { Glibc.close(fd) }
            let end = lseek(fd, 0, SEEK_END)
            return end >= 0 ? Int64(end) : nil
        }
        return Int64(info.st_size)
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

    private func discardDownloadFile() {
        abandonDownload()
        if let path = downloadPath {
            unlink(path)
            downloadPath = nil
        }
    }

    /// Sleeps as long as needed to keep the download at or under the configured speed.
    private func throttle(_ bytes: Int) {
        guard let bus else { return }
        let wait = bus.take(bytes)
        if wait > 0 {
            sleep(UInt64((wait * 1e9).rounded()))
        }
    }

    // MARK: Packets

    private func hex(_ value: Int64) -> String { "0x" + hex8(value) }

    private func hex8(_ value: Int64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    private func okay(_ text: String = "") -> Action { .reply(Array(("OKAY" + text).utf8)) }
    private func fail(_ text: String) -> Action { .reply(Array(("FAIL" + text).utf8)) }
    private func info(_ text: String) -> Action { .reply(Array(("INFO" + text).utf8)) }
}

extension String {
    fileprivate func dropSuffix(_ suffix: String) -> String? {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : nil
    }
}
