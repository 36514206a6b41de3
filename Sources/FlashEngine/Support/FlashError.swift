/// The one error type the engine reports: a kind a program can switch on and a message a person reads.
public struct FlashError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        /// The image is missing, empty, unreadable or corrupt.
        case image
        /// No device, several devices, or a selector that names nothing.
        case deviceSelection
        /// The OS refused access to the device.
        case noPermission
        /// The device answered FAIL.
        case deviceFailed
        /// The device went away (unplug, peer closed).
        case disconnected
        /// The device stopped answering.
        case timeout
        /// The device said something the protocol does not allow.
        case protocolViolation
        /// The user or a program cancelled the job.
        case cancelled
        /// A local I/O or system call failed.
        case io
        /// No job has the id a command named.
        case unknownJob
        /// The job cannot do that now (pause a finished job, resume a running one).
        case jobState
        /// A disk target was refused before anything was written (mounted, system disk, too small...).
        case unsafeTarget
        /// What was read back from a disk differs from what was written.
        case verification
        /// A disk was not confirmed, or is not the disk that was confirmed (another card in the slot).
        case notConfirmed
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
