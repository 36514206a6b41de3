/// The seam between the fastboot protocol and the wire (USB bulk endpoints, TCP).
///
/// A transport moves whole messages: one `write` is one USB transfer or one TCP frame (a
/// download's data is one frame too, written in pieces by `writeStream`), one `read`
/// returns one device response. Implementations are used by one job at a time.
public protocol FastbootTransport: AnyObject, Sendable {
    /// A short description of the peer for messages, e.g. "usb:1-1.2" or "tcp:127.0.0.1:5554".
    var peerDescription: String { get }

    /// Sends one message (a command, or a run of download data).
    func write(_ bytes: [UInt8], timeoutMs: Int) throws

    /// Receives one message from the device, at most `maxLength` bytes.
    /// Throws `FlashError(.timeout, ...)` when nothing arrives in time. `cutShortOnCancel` is false
    /// for the answer that ends a download, which a cancel that padded the download waits for.
    func read(maxLength: Int, timeoutMs: Int, cutShortOnCancel: Bool) throws -> [UInt8]

    /// Sends exactly `totalBytes` from `source`, calling `onAcknowledged` with the number of bytes
    /// the device has accepted so far (cumulative) as transfers complete. Throws `.timeout` when
    /// the device takes nothing for `timeoutMs`.
    func writeStream(_ source: ByteStream, totalBytes: Int64, timeoutMs: Int, onAcknowledged: (Int64) -> Void) throws

    /// Ends the connection; any blocked call returns with an error. Safe to call twice.
    func close()

    /// Called from another thread when the job is cancelled. Over TCP a call blocked waiting for
    /// the device, and every later one, throws `FlashError(.cancelled)` at once; over USB a
    /// download the device has stopped taking does (one it still takes may be padded), and so
    /// does a wait for an answer (`cutShortOnCancel`) that has not come within half a second
    /// (the device is reset).
    func interrupt()

    /// Called after a download was broken off, so the device does not wait forever for the rest
    /// of it. Over TCP closing the connection ends the device's session, so nothing is needed.
    func abandonDownload()

    /// Whether a cancelled download should rather be finished with padding (see
    /// `ControlledStream`) than broken off. False over TCP, where breaking off costs nothing.
    var padsCancelledDownloads: Bool { get }
}

extension FastbootTransport {
    public func abandonDownload() {}
    public func interrupt() {}
    public var padsCancelledDownloads: Bool { true }
}
