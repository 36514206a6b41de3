import Dispatch
import Foundation
import Synchronization

/// Turns Ctrl-C and SIGTERM into a clean cancel of the running job instead of an abrupt exit.
final class InterruptHandler {
    private let sources: [DispatchSourceSignal]
    private let received = ReceivedSignal()

    init(_ onInterrupt: @escaping @Sendable () -> Void) {
        let received = self.received
        sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                received.record(number)
                onInterrupt()
            }
            source.resume()
            return source
        }
    }

    /// The first signal that came (SIGINT or SIGTERM), if any.
    var signalReceived: Int32? { received.value }

    func cancel() {
        for source in sources { source.cancel() }
    }
}

/// For a command that runs until it is told to stop: catches Ctrl-C and SIGTERM from creation
/// (so a stop request never kills it uncleanly), and `wait()` returns once one came.
final class StopRequest {
    private let state = StopState()
    private let handler: InterruptHandler

    init() {
        let state = self.state
        handler = InterruptHandler { state.request() }
    }

    func wait() {
        state.wait()
        handler.cancel()
    }
}

private final class StopState: @unchecked Sendable {
    private let condition = NSCondition()
    /// Guarded by `condition`.
    private var requested = false

    func request() {
        condition.lock()
        requested = true
        condition.broadcast()
        condition.unlock()
    }

    func wait() {
        condition.lock()
        while !requested { condition.wait() }
        condition.unlock()
    }
}

private final class ReceivedSignal: Sendable {
    private let first = Mutex<Int32?>(nil)

    func record(_ number: Int32) { first.withLock { $0 = $0 ?? number } }
    var value: Int32? { first.withLock { $0 } }
}
