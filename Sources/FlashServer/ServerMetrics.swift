import FlashEngine
import Foundation
import Metrics
import struct Prometheus.PrometheusMetricsFactory
import class Prometheus.PrometheusCollectorRegistry

/// What `/metrics` shows, recorded through swift-metrics into a Prometheus registry of the
/// server's own (not the process-wide bootstrap, so several servers can live in one process).
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let jobsByState: [JobState: Metrics.Gauge]
    private let jobsFinished: [JobState: Metrics.Counter]
    private let bytesFlashed: Metrics.Counter
    private let flashSpeed: Metrics.Recorder
    private let clients: Metrics.Meter
    private let coalesced: Metrics.Counter
    private let slowClientsDisconnected: Metrics.Counter
    private let dropped: Metrics.Counter
    private let commandsRefused: Metrics.Counter

    init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.valueHistogramBuckets["flashctl_flash_speed_bytes_per_second"] = [
            1e6, 5e6, 10e6, 20e6, 40e6, 80e6, 160e6, 320e6, 640e6, 1.28e9, 2.56e9,
        ]
        self.factory = factory
        var byState: [JobState: Metrics.Gauge] = [:]
        var finished: [JobState: Metrics.Counter] = [:]
        for state in JobState.allCases {
            byState[state] = Metrics.Gauge(label: "flashctl_jobs", dimensions: [("state", state.rawValue)], factory: factory)
            if state.isFinished {
                finished[state] = Metrics.Counter(label: "flashctl_jobs_finished_total", dimensions: [("result", state.rawValue)], factory: factory)
            }
        }
        jobsByState = byState
        jobsFinished = finished
        bytesFlashed = Metrics.Counter(label: "flashctl_bytes_flashed_total", factory: factory)
        flashSpeed = Metrics.Recorder(label: "flashctl_flash_speed_bytes_per_second", aggregate: true, factory: factory)
        clients = Metrics.Meter(label: "flashctl_websocket_clients", factory: factory)
        coalesced = Metrics.Counter(label: "flashctl_progress_messages_coalesced_total", factory: factory)
        slowClientsDisconnected = Metrics.Counter(label: "flashctl_slow_clients_disconnected_total", factory: factory)
        dropped = Metrics.Counter(label: "flashctl_messages_dropped_total", factory: factory)
        commandsRefused = Metrics.Counter(label: "flashctl_client_commands_refused_total", factory: factory)
    }

    func jobsChanged(_ jobs: [JobStatus]) {
        for state in JobState.allCases where !state.isFinished {
            jobsByState[state]?.record(jobs.filter { $0.state == state }.count)
        }
    }

    func jobFinished(_ job: JobStatus) {
        jobsFinished[job.state]?.increment()
        bytesFlashed.increment(by: Int64(job.bytesTransferred))
        if job.state == .completed, let speed = job.averageSpeed {
            flashSpeed.record(speed)
        }
    }

    func clientConnected() { clients.increment() }

    func clientDisconnected(coalescedMessages: Int, droppedMessages: Int, tooSlow: Bool) {
        clients.decrement()
        if coalescedMessages > 0 { coalesced.increment(by: coalescedMessages) }
        if droppedMessages > 0 { dropped.increment(by: droppedMessages) }
        if tooSlow { slowClientsDisconnected.increment() }
    }

    func commandRefused() { commandsRefused.increment() }

    func text() -> String {
        registry.emitToString()
    }
}
