import Dispatch
import FlashEngine
import Logging

/// Writes each job change to the history and the metrics, off the jobs' threads, in order.
final class HistoryRecorder: Sendable {
    private let store: HistoryStore
    private let metrics: ServerMetrics
    private let logger: Logger
    private let queue = DispatchQueue(label: "flashctl.history")

    init(store: HistoryStore, metrics: ServerMetrics, logger: Logger) {
        self.store = store
        self.metrics = metrics
        self.logger = logger
    }

    func jobChanged(_ status: JobStatus, allJobs: @escaping @Sendable () -> [JobStatus]) {
        queue.async { [store, metrics, logger] in
            do {
                try store.record(status)
            } catch {
                logger.error("could not record \(status.info.jobId) in the history: \(error)")
            }
            if status.state.isFinished { metrics.jobFinished(status) }
            metrics.jobsChanged(allJobs())
        }
    }

    /// Waits until everything handed over so far is written.
    func flush() {
        queue.sync {}
    }
}
