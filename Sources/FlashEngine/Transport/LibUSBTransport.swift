import CLibUSB
import Synchronization

/// Fastboot over a USB interface's bulk endpoints, through libusb.
///
/// Commands and responses use synchronous transfers; download data goes through a pipeline of
/// asynchronous bulk OUT transfers, several in flight, so the bus never idles between transfers.
public final class LibUSBTransport: FastbootTransport, @unchecked Sendable {
    public let peerDescription: String
    private let context: USBContext
    private let handle: OpaquePointer
    private let interfaceNumber: Int32
    private let endpointIn: UInt8
    private let endpointOut: UInt8
    private let closed = Mutex(false)
    /// Set by `interrupt()`: a download stalled on the device is given up (see BulkOutPipeline).
    private let interrupted = Atomic<Bool>(false)
    let pipeline: BulkPipelineSettings

    public init(device: USBFastbootDevice, pipeline: BulkPipelineSettings = BulkPipelineSettings()) throws {
        context = try USBContext.shared.get()
        peerDescription = device.info.serial.map { "\($0) (\(device.info.addressSelector))" } ?? device.info.addressSelector
        interfaceNumber = device.interfaceNumber
        endpointIn = device.endpointIn
        endpointOut = device.endpointOut
        self.pipeline = pipeline

        var opened: OpaquePointer?
        let rc = libusb_open(device.device, &opened)
        guard rc == 0, let opened else {
            throw USBError.flashError(rc, during: "open", device: device.info.addressSelector)
        }
        handle = opened
        // Detaches a kernel driver bound to the interface while we hold it, and rebinds it after.
        _ = libusb_set_auto_detach_kernel_driver(handle, 1)
        let claim = libusb_claim_interface(handle, interfaceNumber)
        guard claim == 0 else {
            // The object is complete, so deinit runs after this throw: it must not close again.
            closed.withLock { $0 = true }
            libusb_close(handle)
            throw USBError.flashError(claim, during: "claiming the fastboot interface", device: device.info.addressSelector)
        }
    }

    deinit {
        close()
    }

    public func write(_ bytes: [UInt8], timeoutMs: Int) throws {
        var bytes = bytes
        var sent: Int32 = 0
        let rc = bytes.withUnsafeMutableBufferPointer { buffer in
            libusb_bulk_transfer(handle, endpointOut, buffer.baseAddress, Int32(buffer.count), &sent, UInt32(timeoutMs))
        }
        guard rc == 0 else { throw USBError.flashError(rc, during: "a command", device: peerDescription) }
        guard Int(sent) == bytes.count else {
            throw FlashError(.io, "short USB write to \(peerDescription): \(sent) of \(bytes.count) bytes")
        }
    }

    /// Waits for the answer in slices, so that a cancel is seen while the device is busy (a flash
    /// or an erase may take minutes). A slice that ends with nothing loses nothing: libusb reports
    /// what arrived before it gave the transfer up.
    public func read(maxLength: Int, timeoutMs: Int, cutShortOnCancel: Bool) throws -> [UInt8] {
        // Read whole packets so a device that sends a full packet never overflows our buffer.
        var buffer = [UInt8](repeating: 0, count: max(maxLength, 512))
        let clock = SystemClock()
        let started = clock.monotonicNanos()
        let deadline = started + UInt64(max(timeoutMs, 1)) * 1_000_000
        var interruptedSince: UInt64?
        while true {
            let now = clock.monotonicNanos()
            if cutShortOnCancel, interruptedSince == nil, interrupted.load(ordering: .relaxed) { interruptedSince = now }
            if let since = interruptedSince, now - since >= Self.answerGraceAfterCancel {
                // Its late answer would be read as the next command's: the device starts over.
                abandonDownload()
                throw FlashError(.cancelled, "gave up waiting for \(peerDescription)'s answer: cancelled")
            }
            guard now < deadline else {
                throw USBError.flashError(LIBUSB_ERROR_TIMEOUT.rawValue, during: "waiting for the device's answer", device: peerDescription)
            }
            let sliceMs = UInt32(max(1, min((deadline - now) / 1_000_000, Self.answerSliceMs)))
            var received: Int32 = 0
            let rc = buffer.withUnsafeMutableBufferPointer { pointer in
                libusb_bulk_transfer(handle, endpointIn, pointer.baseAddress, Int32(pointer.count), &received, sliceMs)
            }
            if rc == 0 || received > 0 { return Array(buffer.prefix(Int(received))) }
            guard rc == LIBUSB_ERROR_TIMEOUT.rawValue else {
                throw USBError.flashError(rc, during: "waiting for the device's answer", device: peerDescription)
            }
        }
    }

    private static let answerSliceMs: UInt64 = 100
    /// How long an answer is still waited for after a cancel.
    static let answerGraceAfterCancel: UInt64 = 500_000_000

    public func writeStream(_ source: ByteStream, totalBytes: Int64, timeoutMs: Int, onAcknowledged: (Int64) -> Void) throws {
        let run = BulkOutPipeline(
            context: context, handle: handle, endpoint: endpointOut, device: peerDescription, settings: pipeline, transferTimeoutMs: timeoutMs,
            isInterrupted: { [self] in interrupted.load(ordering: .relaxed) }
        )
        try run.send(source, totalBytes: totalBytes, onAcknowledged: onAcknowledged)
    }

    /// A cancel: a download the device has stopped taking is given up within half a second
    /// instead of at the transfer timeout. One it still takes goes on, so that a cancel near its
    /// end can finish it with padding (`ControlledStream`). A wait for the device's answer (to
    /// flash or erase, say) is given up after half a second, and the device is reset: over USB
    /// its late answer would otherwise stay in the pipe, to be read as the next command's.
    public func interrupt() {
        interrupted.store(true, ordering: .relaxed)
    }

    /// A USB port reset: the device re-enumerates and its bootloader starts a fresh command loop.
    public func abandonDownload() {
        guard !closed.withLock({ $0 }) else { return }
        _ = libusb_reset_device(handle)
    }

    public func close() {
        let wasClosed = closed.withLock { closed in
            defer { closed = true }
            return closed
        }
        guard !wasClosed else { return }
        _ = libusb_release_interface(handle, interfaceNumber)
        libusb_close(handle)
    }
}
