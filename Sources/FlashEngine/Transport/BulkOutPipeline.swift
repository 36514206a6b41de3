import CLibUSB
import Synchronization

/// How download data is cut into USB transfers.
public struct BulkPipelineSettings: Sendable {
    /// Bytes per bulk OUT transfer; halved (down to `minimumTransferSize`) when the kernel
    /// cannot allocate that much (LIBUSB_ERROR_NO_MEM).
    public var transferSize: Int
    /// Transfers submitted at once, so the host controller always has the next one queued.
    public var transfersInFlight: Int

    public static let minimumTransferSize = 16 * 1024

    public init(transferSize: Int = 1 << 20, transfersInFlight: Int = 3) {
        self.transferSize = max(transferSize, Self.minimumTransferSize)
        self.transfersInFlight = max(transfersInFlight, 2)
    }
}

/// One asynchronous bulk OUT transfer and its buffer, reused for the whole download.
private final class TransferSlot: @unchecked Sendable {
    struct Outcome {
        var done = false
        var status = LIBUSB_TRANSFER_COMPLETED
        var actualLength = 0
    }

    let transfer: UnsafeMutablePointer<libusb_transfer>
    let buffer: UnsafeMutableRawPointer
    let capacity: Int
    /// libusb's "completed" flag for the event loop, shared by all slots of a pipeline.
    let wakeFlag: UnsafeMutablePointer<Int32>
    let outcome = Mutex(Outcome())
    var submittedLength = 0

    init?(capacity: Int, wakeFlag: UnsafeMutablePointer<Int32>) {
        guard let transfer = libusb_alloc_transfer(0) else { return nil }
        self.transfer = transfer
        self.capacity = capacity
        self.buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 4096)
        self.wakeFlag = wakeFlag
    }

    deinit {
        libusb_free_transfer(transfer)
        buffer.deallocate()
    }

    var isDone: Bool { outcome.withLock { $0.done } }
}

private let transferFinished: libusb_transfer_cb_fn = { transfer in
    guard let transfer, let userData = transfer.pointee.user_data else { return }
    let slot = Unmanaged<TransferSlot>.fromOpaque(userData).takeUnretainedValue()
    slot.outcome.withLock { outcome in
        outcome.done = true
        outcome.status = transfer.pointee.status
        outcome.actualLength = Int(transfer.pointee.actual_length)
    }
    slot.wakeFlag.pointee = 1
}

/// Streams one download over a bulk OUT endpoint with several transfers in flight, counting as
/// sent only what the device has accepted.
final class BulkOutPipeline {
    private let context: USBContext
    private let handle: OpaquePointer
    private let endpoint: UInt8
    private let device: String
    private let settings: BulkPipelineSettings
    /// How long one transfer may wait for the device to accept it.
    private let transferTimeoutMs: Int

    /// Whether the job was cancelled (see `waitUntilDone`).
    private let isInterrupted: @Sendable () -> Bool

    init(context: USBContext, handle: OpaquePointer, endpoint: UInt8, device: String, settings: BulkPipelineSettings, transferTimeoutMs: Int,
         isInterrupted: @escaping @Sendable () -> Bool = { false }) {
        self.transferTimeoutMs = transferTimeoutMs
        self.isInterrupted = isInterrupted
        self.context = context
        self.handle = handle
        self.endpoint = endpoint
        self.device = device
        self.settings = settings
    }

    func send(_ source: ByteStream, totalBytes: Int64, onAcknowledged: (Int64) -> Void) throws {
        let wakeFlag = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        wakeFlag.pointee = 0
        let neededSlots = totalBytes / Int64(BulkPipelineSettings.minimumTransferSize) + 1
        let slotCount = Int(min(Int64(settings.transfersInFlight), neededSlots))
        var idle: [TransferSlot] = []
        for _ in 0..<slotCount {
            guard let slot = TransferSlot(capacity: settings.transferSize, wakeFlag: wakeFlag) else {
                wakeFlag.deallocate()
                throw FlashError(.io, "cannot allocate USB transfers")
            }
            idle.append(slot)
        }
        var inFlight: [TransferSlot] = []
        var transferSize = settings.transferSize
        var carry = CarriedBytes()
        var submitted: Int64 = 0
        var acknowledged: Int64 = 0
        var failure: FlashError?

        defer {
            // Transfers still owned by the kernel must finish before their memory goes away;
            // if libusb never gives one back, its memory is leaked rather than freed under it.
            // A vanished device may never hand its transfers back, and a cancel must end promptly:
            // waiting long helps nobody then.
            let patience: UInt64 = failure?.kind == .disconnected || failure?.kind == .cancelled ? 250_000_000 : 5_000_000_000
            if drain(inFlight, wakeFlag: wakeFlag, patienceNanos: patience) {
                wakeFlag.deallocate()
            } else {
                for slot in inFlight { _ = Unmanaged.passRetained(slot) }
            }
        }

        while acknowledged < totalBytes && failure == nil {
            while let slot = idle.last, submitted < totalBytes, failure == nil {
                let wanted = Int(min(Int64(transferSize), totalBytes - submitted))
                do {
                    let filled = try fill(slot, count: wanted, carry: &carry, source: source)
                    guard filled == wanted else {
                        throw FlashError(.image, "image data ended \(totalBytes - submitted - Int64(filled)) bytes before the announced size")
                    }
                    var length = filled
                    var rc = submit(slot, length: length)
                    while rc == LIBUSB_ERROR_NO_MEM.rawValue && transferSize / 2 >= BulkPipelineSettings.minimumTransferSize {
                        transferSize /= 2
                        if length > transferSize {
                            carry.prepend(UnsafeRawBufferPointer(start: slot.buffer.advanced(by: transferSize), count: length - transferSize))
                            length = transferSize
                        }
                        rc = submit(slot, length: length)
                    }
                    guard rc == 0 else { throw USBError.flashError(rc, during: "download", device: device) }
                    submitted += Int64(length)
                    idle.removeLast()
                    inFlight.append(slot)
                } catch let error as FlashError {
                    failure = error
                }
            }
            guard failure == nil, let oldest = inFlight.first else { break }
            guard waitUntilDone(oldest, wakeFlag: wakeFlag) else {
                failure = FlashError(.cancelled, "the download to \(device) was given up: cancelled while the device took no data")
                break
            }
            while let slot = inFlight.first, slot.isDone {
                inFlight.removeFirst()
                let outcome = slot.outcome.withLock { $0 }
                if let error = error(for: outcome, expected: slot.submittedLength) {
                    failure = error
                    break
                }
                acknowledged += Int64(outcome.actualLength)
                onAcknowledged(acknowledged)
                idle.append(slot)
            }
        }
        if let failure {
            throw failure
        }
    }

    private func fill(_ slot: TransferSlot, count: Int, carry: inout CarriedBytes, source: ByteStream) throws -> Int {
        let fromCarry = carry.take(into: UnsafeMutableRawBufferPointer(start: slot.buffer, count: count))
        guard fromCarry < count else { return fromCarry }
        let rest = UnsafeMutableRawBufferPointer(start: slot.buffer.advanced(by: fromCarry), count: count - fromCarry)
        var filled = fromCarry
        while filled < count {
            let n = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: rest[(filled - fromCarry)...]))
            if n == 0 { break }
            filled += n
        }
        return filled
    }

    private func submit(_ slot: TransferSlot, length: Int) -> Int32 {
        slot.outcome.withLock { $0 = TransferSlot.Outcome() }
        slot.submittedLength = length
        let transfer = slot.transfer
        transfer.pointee.dev_handle = handle
        transfer.pointee.endpoint = endpoint
        transfer.pointee.type = UInt8(LIBUSB_TRANSFER_TYPE_BULK.rawValue)
        transfer.pointee.timeout = UInt32(transferTimeoutMs)
        transfer.pointee.buffer = slot.buffer.assumingMemoryBound(to: UInt8.self)
        transfer.pointee.length = Int32(length)
        transfer.pointee.user_data = Unmanaged.passUnretained(slot).toOpaque()
        transfer.pointee.callback = transferFinished
        transfer.pointee.flags = 0
        return libusb_submit_transfer(transfer)
    }

    /// Waits for `slot` to come back; false when the transport was interrupted (a cancel) and the
    /// device has taken nothing for `stalledGiveUp`: a device still taking data is left to finish
    /// (the cancel pads or breaks off the download at the next read), one that stopped is not
    /// waited for until the transfer's timeout.
    private func waitUntilDone(_ slot: TransferSlot, wakeFlag: UnsafeMutablePointer<Int32>) -> Bool {
        let waitingSince = SystemClock().monotonicNanos()
        while !slot.isDone {
            wakeFlag.pointee = 0
            guard !slot.isDone else { return true }
            if isInterrupted(), SystemClock().monotonicNanos() - waitingSince >= Self.stalledGiveUp {
                return false
            }
            var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
            _ = libusb_handle_events_timeout_completed(context.raw, &timeout, wakeFlag)
        }
        return true
    }

    /// How long an interrupted download waits for a transfer before giving up on the device.
    static let stalledGiveUp: UInt64 = 500_000_000

    /// Cancels what is still in flight and waits for libusb to hand it back. Returns false if some
    /// transfer did not come back in time.
    private func drain(_ slots: [TransferSlot], wakeFlag: UnsafeMutablePointer<Int32>, patienceNanos: UInt64) -> Bool {
        for slot in slots where !slot.isDone {
            _ = libusb_cancel_transfer(slot.transfer)
        }
        let deadline = SystemClock().monotonicNanos() + patienceNanos
        while !slots.allSatisfy({ $0.isDone }) && SystemClock().monotonicNanos() < deadline {
            wakeFlag.pointee = 0
            var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
            _ = libusb_handle_events_timeout_completed(context.raw, &timeout, wakeFlag)
        }
        return slots.allSatisfy { $0.isDone }
    }

    private func error(for outcome: TransferSlot.Outcome, expected: Int) -> FlashError? {
        switch outcome.status {
        case LIBUSB_TRANSFER_COMPLETED:
            guard outcome.actualLength == expected else {
                return FlashError(.io, "\(device) accepted only \(outcome.actualLength) of \(expected) bytes of a transfer")
            }
            return nil
        case LIBUSB_TRANSFER_NO_DEVICE:
            return FlashError(.disconnected, "USB connection lost (transfer): device \(device) was unplugged")
        case LIBUSB_TRANSFER_TIMED_OUT:
            return FlashError(.timeout, "\(device) stopped accepting data (no progress for \(transferTimeoutMs / 1000) s)")
        case LIBUSB_TRANSFER_STALL:
            return FlashError(.protocolViolation, "\(device) stalled the download endpoint")
        case LIBUSB_TRANSFER_CANCELLED:
            return FlashError(.cancelled, "transfer to \(device) cancelled")
        default:
            return FlashError(.disconnected, "USB transfer to \(device) failed (the device may have been unplugged)")
        }
    }
}

/// Bytes taken from the source but not yet sent, after a transfer had to be made smaller.
private struct CarriedBytes {
    private var bytes: [UInt8] = []
    private var start = 0

    mutating func prepend(_ data: UnsafeRawBufferPointer) {
        bytes = Array(data) + bytes[start...]
        start = 0
    }

    mutating func take(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let count = min(buffer.count, bytes.count - start)
        guard count > 0 else { return 0 }
        bytes.withUnsafeBytes { source in
            buffer.baseAddress!.copyMemory(from: source.baseAddress!.advanced(by: start), byteCount: count)
        }
        start += count
        if start == bytes.count {
            bytes = []
            start = 0
        }
        return count
    }
}
