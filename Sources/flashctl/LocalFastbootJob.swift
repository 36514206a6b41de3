import ArgumentParser
import FlashEngine

/// A fastboot job run here, by `flash` and `update`: its progress drawn (or printed as JSON),
/// Ctrl-C cancelling it with the shell's status and what was touched, a failure exiting 1.
enum LocalFastbootJob {
    static func run(_ request: FastbootFlashRequest, json: Bool) throws {
        let job = try FastbootFlashJob.prepare(request, finder: DeviceListing.finder)
        let renderer = ProgressRenderer(json: ProgressRenderer.wantsJSON(flag: json))
        let interrupt = InterruptHandler { job.control.cancel() }
        defer { interrupt.cancel() }
        let outcome = job.run(progress: job.makeProgress { event in renderer.render(event) })
        if outcome.state == .cancelled, let signal = interrupt.signalReceived {
            let partitions = job.info.partition ?? job.partition
            throw CancelReport.exit(lines: [CancelReport.fastboot(outcome, partition: partitions, device: job.device.info.addressSelector)], signal: signal)
        }
        if outcome.state != .completed {
            throw ExitCode.failure
        }
    }
}
