import ArgumentParser
import FlashEngine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `flashctl flash --device /dev/sdX [--device ...] IMAGE`: names the exact targets, asks before
/// writing (unless --yes), then shows the job's progress.
struct DiskFlash {
    let command: FlashCommand

    func run() throws {
        var request = DiskFlashRequest(
            imagePath: command.image, targets: command.device, bmapPath: command.bmap, noBmap: command.noBmap,
            entry: command.entry, force: command.force, verify: !command.noVerify)
        request.offersForce = true
        let batch = try DiskBatch.prepare(request)
        try confirm(batch)
        let json = ProgressRenderer.wantsJSON(flag: command.json)
        let infos = batch.jobs.map(\.info)
        let render: @Sendable (FlashEvent) -> Void
        if json || batch.jobs.count == 1 {
            let renderer = ProgressRenderer(json: json)
            render = { renderer.render($0) }
        } else {
            let renderer = MultiTargetRenderer(targets: infos)
            render = { renderer.render($0) }
        }
        let jobs = batch.jobs
        let interrupt = InterruptHandler { jobs.forEach { $0.control.cancel() } }
        defer { interrupt.cancel() }
        let outcomes = batch.runAll { $0.makeProgress(emit: render) }
        let image = batch.image
        for (job, outcome) in zip(batch.jobs, outcomes) where outcome.state == .completed {
            ProgressRenderer.writeAll(Self.summary(target: job.target.path, imagePath: image.path, imageSize: image.imageSize, outcome: outcome) + "\n", to: STDERR_FILENO)
        }
        if let signal = interrupt.signalReceived, outcomes.contains(where: { $0.state == .cancelled }) {
            let lines = zip(batch.jobs, outcomes).filter { $0.1.state == .cancelled }.map {
                CancelReport.disk($0.1, path: $0.0.target.path, imageBytes: image.totalBytes)
            }
            throw CancelReport.exit(lines: lines, signal: signal)
        }
        if outcomes.contains(where: { $0.state != .completed }) {
            throw ExitCode.failure
        }
    }

    /// The line a person keeps: which disk, whether it was read back equal, what image and how big.
    static func summary(target: String, imagePath: String, imageSize: Int64?, outcome: JobOutcome) -> String {
        let size = (imageSize ?? outcome.bytesSent)
        var facts = "image \(HumanFormat.bytes(size)), \(size) bytes"
        if outcome.bytesSent != size { facts += "; \(HumanFormat.bytes(outcome.bytesSent)) written" }
        let checked = outcome.verified == true ? "written and verified (read back equal)" : "written, not verified (--no-verify)"
        return "\(target): \(checked): \(imagePath) (\(facts))"
    }

    /// Shows what will be overwritten and asks; --yes skips the question. Without a terminal to
    /// ask on, --yes is required.
    private func confirm(_ batch: DiskBatch) throws {
        var text = "flashctl will overwrite:\n"
        for job in batch.jobs {
            text += "  \(job.target.summary)\n"
        }
        let image = batch.image
        var what = "with \(image.path) (\(image.format.rawValue)\(image.isCompressedSparse ? ", an Android sparse image inside" : "")"
        if let entry = image.entry { what += ", entry \(entry)" }
        if let total = image.totalBytes { what += ", \(HumanFormat.bytes(total)) to write" }
        if let map = image.blockMap { what += ", block map \(map.path)" }
        text += what + ")\n"
        ProgressRenderer.writeAll(text, to: STDERR_FILENO)
        try Confirmation.ask(
            "Everything on \(batch.jobs.count == 1 ? "it" : "them") will be lost. Type 'yes' to continue: ", accepted: ["yes"],
            assumeYes: command.yes,
            noTerminal: "not confirmed: standard input is not a terminal, so add --yes to write without asking",
            refused: "not confirmed: nothing was written")
    }
}
