import ArgumentParser
import FlashEngine
import FlashServer
import Foundation

struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Show past jobs, newest first.",
        discussion: "Reads the history database the server writes (no server needed), or asks a server with --server."
    )

    @Option(name: .long, help: "History database to read (default: $XDG_STATE_HOME/flashctl/history.sqlite, else ~/.local/state/flashctl/history.sqlite).", completion: .file())
    var history: String?

    @Option(name: .long, help: "Ask this server instead of reading the database.")
    var server: String?

    @Option(name: .long, help: "Access token for --server (default: $FLASHCTL_TOKEN).")
    var token: String?

    @Option(name: .long, help: ArgumentHelp("CA certificate (PEM) to trust for an https server with a certificate of its own (default: $FLASHCTL_CA).", valueName: "file"), completion: .file())
    var ca: String?

    @Option(name: .long, help: "Only this device's jobs.")
    var device: String?

    @Option(name: .long, help: "How many jobs to show.")
    var limit = 50

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    func run() async throws {
        let entries: [HistoryEntry]
        if server != nil {
            var path = "/api/history?limit=\(limit)"
            if let device { path += "&deviceId=\(device.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? device)" }
            let answer = try await ServerClient(server: server, token: token, ca: ca).request("GET", path)
            let data = try JSONSerialization.data(withJSONObject: (answer as? [String: Any])?["jobs"] ?? [])
            entries = try JSONDecoder().decode([HistoryEntry].self, from: data)
        } else {
            let history = self.history ?? HistoryStore.defaultPath()
            guard FileManager.default.fileExists(atPath: history) else {
                throw FlashError(.io, "no history at \(history) yet (the server creates it when it starts)")
            }
            entries = try HistoryStore(path: history).recent(limit: limit, deviceId: device)
        }
        if json {
            return print(String(decoding: try JSONOutput.encoder([.prettyPrinted, .sortedKeys]).encode(entries), as: UTF8.self))
        }
        guard !entries.isEmpty else { return print("no jobs recorded") }
        let rows = entries.map { entry -> [String] in
            [
                HumanFormat.timestamp(entry.createdAt), entry.jobId, entry.deviceId,
                (entry.image as NSString?)?.lastPathComponent ?? "-", entry.partition ?? "-", entry.result,
                HumanFormat.bytes(entry.bytesTransferred),
                entry.durationMs.map { HumanFormat.duration(milliseconds: $0) } ?? "-",
                entry.averageSpeed.map { HumanFormat.speed($0) } ?? "-",
                entry.error ?? Self.digest(entry),
            ]
        }
        print(TextTable.render(header: ["WHEN", "JOB", "DEVICE", "IMAGE", "PARTITION", "RESULT", "BYTES", "TIME", "AVG SPEED", "ERROR / DIGEST"], rows: rows))
    }

    /// The start of what the job recorded of its bytes: enough to tell two images apart.
    private static func digest(_ entry: HistoryEntry) -> String {
        if let sha256 = entry.sha256 { return "sha256:" + sha256.prefix(16) }
        if let xxh128 = entry.xxh128 { return "xxh128:" + xxh128.prefix(16) }
        return ""
    }
}
