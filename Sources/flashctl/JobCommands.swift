import ArgumentParser
import FlashEngine
import Foundation

/// Where to find the server, shared by the job commands.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "The flashctl server (default: $FLASHCTL_SERVER or http://127.0.0.1:3001).")
    var server: String?

    @Option(name: .long, help: "Access token (default: $FLASHCTL_TOKEN).")
    var token: String?

    @Option(name: .long, help: ArgumentHelp("CA certificate (PEM) to trust for an https server with a certificate of its own (default: $FLASHCTL_CA).", valueName: "file"), completion: .file())
    var ca: String?

    @Flag(name: .long, help: "Print the server's JSON answer.")
    var json = false

    var client: ServerClient { ServerClient(server: server, token: token, ca: ca) }
}

struct JobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "jobs", abstract: "List the server's jobs.")

    @OptionGroup var options: ServerOptions

    func run() async throws {
        let answer = try await options.client.request("GET", "/api/jobs")
        if options.json { return printJSON(answer) }
        let jobs = (answer as? [String: Any])?["jobs"] as? [[String: Any]] ?? []
        guard !jobs.isEmpty else { return print("no jobs") }
        let rows = jobs.map { job -> [String] in
            let bytes = (job["bytesTransferred"] as? NSNumber)?.int64Value ?? 0
            let total = (job["totalBytes"] as? NSNumber)?.int64Value ?? 0
            let speed = (job["transferSpeed"] as? NSNumber)?.int64Value ?? 0
            let state = job["state"] as? String ?? "?"
            return [
                job["jobId"] as? String ?? "?", job["deviceId"] as? String ?? "?", state,
                HumanFormat.percent((job["progress"] as? NSNumber)?.doubleValue ?? 0),
                "\(HumanFormat.bytes(bytes)) / \(HumanFormat.bytes(total))",
                speed > 0 ? HumanFormat.speed(speed) : "-",
                (job["error"] as? String) ?? (job["stage"] as? String) ?? "",
            ]
        }
        print(TextTable.render(header: ["JOB", "DEVICE", "STATE", "PROGRESS", "BYTES", "SPEED", "STAGE / ERROR"], rows: rows))
    }
}

/// pause, resume and cancel: one command each, the same shape.
struct JobControlCommand {
    static func send(_ action: String, jobId: String, options: ServerOptions) async throws {
        let answer = try await options.client.request("POST", "/api/jobs/\(jobId)/\(action)")
        if options.json { return printJSON(answer) }
        let status = (answer as? [String: Any])?["status"] as? String ?? "?"
        print("\(jobId): \(status)")
    }
}

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Pause a running job at its next chunk.")
    @OptionGroup var options: ServerOptions
    @Argument(help: "The job id (job_...).") var jobId: String
    func run() async throws { try await JobControlCommand.send("pause", jobId: jobId, options: options) }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Resume a paused job.")
    @OptionGroup var options: ServerOptions
    @Argument(help: "The job id (job_...).") var jobId: String
    func run() async throws { try await JobControlCommand.send("resume", jobId: jobId, options: options) }
}

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel a queued, running or paused job.")
    @OptionGroup var options: ServerOptions
    @Argument(help: "The job id (job_...).") var jobId: String
    func run() async throws { try await JobControlCommand.send("cancel", jobId: jobId, options: options) }
}

func printJSON(_ value: Any) {
    print(JSONOutput.string(value, [.prettyPrinted, .sortedKeys]))
}
