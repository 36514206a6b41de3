import Dispatch
import Foundation

/// Turns Ctrl-C and SIGTERM into a clean cancel of the running job instead of an abrupt exit.
final class InterruptHandler {
    private let sources: [DispatchSourceSignal]

    init(_ onInterrupt: @escaping @Sendable () -> Void) {
        sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler(handler: onInterrupt)
            source.resume()
            return source
        }
    }

    func cancel() {
        for source in sources { source.cancel() }
    }
}
