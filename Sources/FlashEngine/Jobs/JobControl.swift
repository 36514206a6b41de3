import Foundation

/// Lets other threads hold, release or stop a running job; the job obeys at its next chunk
/// boundary (`ControlledStream` checks before every read).
public final class JobControl: @unchecked Sendable {
    private let condition = NSCondition()
    private var cancelled = false
    private var cause = StopCause.user
    private var paused = false
    private var cancelHandlers: [Int: @Sendable () -> Void] = [:]
    private var nextHandlerID = 0

    public init() {}

    /// The first cancel's cause is the one the job reports.
    public func cancel(_ cause: StopCause = .user) {
        condition.lock()
        if !cancelled { self.cause = cause }
        cancelled = true
        let handlers = cancelHandlers.values
        cancelHandlers.removeAll()
        condition.broadcast()
        condition.unlock()
        for handler in handlers { handler() }
    }

    /// Runs `handler` (on the cancelling thread) when the job is cancelled, or at once if it
    /// already is: how a wait inside a transport is ended. Returns an id for
    /// `removeCancelHandler` once the wait can no longer happen.
    func onCancel(_ handler: @escaping @Sendable () -> Void) -> Int {
        condition.lock()
        guard !cancelled else {
            condition.unlock()
            handler()
            return -1
        }
        nextHandlerID += 1
        cancelHandlers[nextHandlerID] = handler
        condition.unlock()
        return nextHandlerID
    }

    func removeCancelHandler(_ id: Int) {
        condition.lock()
        cancelHandlers.removeValue(forKey: id)
        condition.unlock()
    }

    /// Returns false when the job was already paused or is cancelled.
    @discardableResult
    public func pause() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !paused, !cancelled else { return false }
        paused = true
        return true
    }

    /// Returns false when the job was not paused.
    @discardableResult
    public func resume() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard paused else { return false }
        paused = false
        condition.broadcast()
        return true
    }

    public var isCancelled: Bool {
        condition.lock()
        defer { condition.unlock() }
        return cancelled
    }

    /// Why the job was cancelled (meaningful once `isCancelled`).
    public var stopCause: StopCause {
        condition.lock()
        defer { condition.unlock() }
        return cause
    }

    public var isPaused: Bool {
        condition.lock()
        defer { condition.unlock() }
        return paused
    }

    func checkCancelled() throws {
        if isCancelled {
            throw FlashError(.cancelled, "cancelled by user")
        }
    }

    /// Blocks while the job is paused; throws once it is cancelled.
    func waitWhilePaused() throws {
        condition.lock()
        defer { condition.unlock() }
        while paused && !cancelled {
            condition.wait()
        }
        if cancelled { throw FlashError(.cancelled, "cancelled by user") }
    }

    /// Sleeps for `seconds`, waking early (and throwing) when the job is cancelled.
    func sleep(seconds: Double) throws {
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        while !cancelled, condition.wait(until: deadline) {}
        if cancelled { throw FlashError(.cancelled, "cancelled by user") }
    }
}
