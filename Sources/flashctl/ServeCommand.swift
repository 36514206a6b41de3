import ArgumentParser
import FlashEngine
import FlashServer
import Foundation

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve live progress (WebSocket /flash-progress), the HTTP job API and the dashboard.",
        discussion: """
            Listens on 127.0.0.1:3001 unless told otherwise; any other address needs an access token \
            (--token-file, or $FLASHCTL_TOKEN; --token shows in ps), which clients send as \
            'Authorization: Bearer TOKEN' or ?token=TOKEN.
            Images named in API requests must be inside --images. Jobs are recorded in --history (SQLite).
            --emulate N adds N emulated fastboot devices (EMU1...EMUN), to try everything without hardware.
            --auto-flash PROFILES.yaml flashes each USB device that a udev rule gave FLASHCTL_PROFILE=NAME \
            with profile NAME as soon as it is plugged in (see udev/ and docs/usage.md); the file is checked \
            at start and the server refuses to start when it is wrong.
            """
    )

    @Option(name: .long, help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(name: [.customShort("p"), .long], help: "Port to listen on (0: any free port, printed at start).")
    var port = 3001

    @Option(name: .long, help: "Access token clients must send (at least 16 characters); other users see it in ps: prefer --token-file or $FLASHCTL_TOKEN.")
    var token: String?

    @Option(name: .long, help: "File holding the access token.", completion: .file())
    var tokenFile: String?

    @Option(name: .long, help: ArgumentHelp("PEM certificate (chain) to serve https and wss with; give --tls-key too.", valueName: "file"), completion: .file())
    var tlsCert: String?

    @Option(name: .long, help: ArgumentHelp("PEM private key of --tls-cert.", valueName: "file"), completion: .file())
    var tlsKey: String?

    @Option(name: .customLong("allow-origin"), help: "A web origin (e.g. http://bench.local:8080) whose pages may use the server; repeatable.")
    var allowedOrigins: [String] = []

    @Option(name: .customLong("allow-tcp"), help: ArgumentHelp("A fastboot-over-TCP device the API may flash (tcp:HOST[:PORT] jobs), as HOST (any port) or HOST:PORT; repeatable. The --emulate devices are always allowed.", valueName: "host[:port]"))
    var allowedTCPDevices: [String] = []

    @Option(name: .long, help: ArgumentHelp("Join a farm of stations sharing this PostgreSQL (or $FLASHCTL_FARM); the password from the URL or the libpq password file (~/.pgpass); sslmode honoured.", valueName: "postgres://USER@HOST/DB"))
    var farm: String?

    @Option(name: .long, help: ArgumentHelp("This station's name in the farm (or $FLASHCTL_STATION; default: the host name).", valueName: "name"))
    var station: String?

    @Option(name: .long, help: ArgumentHelp("Where the farm's users reach this station (default: the address it listens on).", valueName: "url"))
    var stationAddress: String?

    @Option(name: .long, help: "Directory API requests take images from (default: $XDG_DATA_HOME/flashctl/images, else ~/.local/share/flashctl/images).", completion: .directory)
    var images: String?

    @Option(name: .long, help: "Job history database (SQLite; default: $XDG_STATE_HOME/flashctl/history.sqlite, else ~/.local/state/flashctl/history.sqlite).", completion: .file())
    var history: String?

    @Option(name: .long, help: "Number of emulated fastboot devices to add.")
    var emulate = 0

    @Option(name: .long, help: "Write speed of each emulated device in bytes per second (e.g. 40M = 40 MiB/s; default: unlimited).")
    var emulateSpeed: ByteCount?

    @Flag(name: .long, help: "Give the emulated devices A/B slots (boot_a, boot_b...; slot a active), as 'flashctl emulate --slots'.")
    var emulateSlots = false

    @Option(name: .long, help: "Jobs that may run at once (one per device).")
    var maxParallel = 16

    @Option(name: .long, help: "Bandwidth cap for all jobs together, bytes per second (e.g. 100M = 100 MiB/s).")
    var bandwidth: ByteCount?

    @Option(name: .customLong("auto-flash"), help: ArgumentHelp("Auto-flash devices udev marks with FLASHCTL_PROFILE, with the profiles in this YAML file.", valueName: "profiles.yaml"), completion: .file(extensions: ["yaml", "yml"]))
    var autoFlash: String?

    @Option(name: .long, help: "The most progress messages per job in any second, its last one included.")
    var progressRate = 4.0

    @Option(name: .long, help: ArgumentHelp("Open connections allowed from one address; more are closed at once (in all, the open-file limit less a reserve).", valueName: "n"))
    var maxConnectionsPerPeer = 1024

    @Option(name: .long, help: ArgumentHelp("Seconds an HTTP connection may stay open with no request in progress (idle, or a request whose head never completes) before it is closed.", valueName: "seconds"))
    var idleTimeout = 30.0

    @Option(name: .customLong("io-nice"), parsing: .unconditional, help: ArgumentHelp("Niceness for the threads that serve dashboards and the API: below 0 (e.g. -10; root or CAP_SYS_NICE) progress goes out sooner while flashing keeps every core busy; above 0 (e.g. 10; no privilege needed) flashing gets the CPU first, so many dashboards slow it less, and messages arrive later. Default 0: left as they are.", valueName: "n"))
    var ioNice: Int32 = 0

    @Option(name: .customLong("io-threads"), help: ArgumentHelp("Threads that serve dashboards and the API. Default: half the number of cores, at least 1, so that a burst of messages to many dashboards never holds every core while jobs need to wake; one per core gets messages out sooner when flashing alone keeps every core busy.", valueName: "n"))
    var ioThreads: Int?

    func validate() throws {
        guard progressRate > 0, progressRate <= 100 else {
            throw ValidationError("--progress-rate must be between 0 and 100")
        }
        guard (-20...19).contains(ioNice) else {
            throw ValidationError("--io-nice must be between -20 and 19")
        }
        if let ioThreads, !(1...256).contains(ioThreads) {
            throw ValidationError("--io-threads must be between 1 and 256")
        }
    }

    func run() async throws {
        var token = self.token ?? ProcessInfo.processInfo.environment["FLASHCTL_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        if self.token != nil {
            FileHandle.standardError.write(Data("warning: a token given with --token shows in 'ps' to every user of this machine; use --token-file FILE or FLASHCTL_TOKEN\n".utf8))
        }
        if let tokenFile {
            do {
                token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw ValidationError("cannot read the token file \(tokenFile): \(error.localizedDescription)")
            }
        }
        var configuration = ServerConfiguration(
            host: host, port: port, token: token, allowedOrigins: allowedOrigins,
            imageDirectory: images ?? ServerConfiguration.defaultImageDirectory(), historyPath: history ?? HistoryStore.defaultPath(),
            scheduler: .init(maxParallelJobs: maxParallel, totalBandwidth: bandwidth?.value, progressRate: ProgressRate(perSecond: progressRate)),
            emulatedDevices: emulate, emulatedSpeed: emulateSpeed?.value, autoFlashProfiles: autoFlash,
            ioNiceness: ioNice, ioThreads: ioThreads ?? ServerConfiguration.defaultIOThreads()
        )
        configuration.idleTimeout = idleTimeout
        configuration.emulatedSlots = emulateSlots
        configuration.maxConnectionsPerPeer = maxConnectionsPerPeer
        configuration.tlsCertificatePath = tlsCert
        configuration.tlsKeyPath = tlsKey
        if !configuration.listensOnLoopbackOnly, !configuration.usesTLS {
            FileHandle.standardError.write(Data("warning: serving \(host) without TLS: the access token and the progress travel in clear text; give --tls-cert and --tls-key\n".utf8))
        }
        configuration.allowedTCPDevices = allowedTCPDevices.map { $0.hasPrefix("tcp:") ? String($0.dropFirst(4)) : $0 }
        let environment = ProcessInfo.processInfo.environment
        if let url = farm ?? environment["FLASHCTL_FARM"].flatMap({ $0.isEmpty ? nil : $0 }) {
            let name = station ?? environment["FLASHCTL_STATION"].flatMap { $0.isEmpty ? nil : $0 } ?? FarmConfiguration.defaultStationName()
            configuration.farm = FarmConfiguration(url: url, station: name, address: stationAddress)
        } else if station != nil || stationAddress != nil {
            throw ValidationError("--station and --station-address need --farm (or FLASHCTL_FARM)")
        }
        let server = try FlashServer(configuration: configuration)
        let configured = configuration
        let interrupt = InterruptHandler {
            Task { await server.shutdown() }
        }
        defer { interrupt.cancel() }
        let emulated = server.emulatedDevices
        let emulatedDirectory = server.emulatedDevicesDirectory ?? ""
        let interrupted = server.interruptedJobs
        let autoFlashProfiles = server.autoFlashProfiles
        let autoFlashPath = autoFlash ?? ""
        try await server.run { url in
            let webSocket = url.replacingOccurrences(of: "https://", with: "wss://").replacingOccurrences(of: "http://", with: "ws://")
            var lines = ["flashctl serve: listening on \(url) (WebSocket \(webSocket)/flash-progress)"]
            lines.append("images from \(configured.imageDirectory); history in \(configured.historyPath)")
            if !autoFlashProfiles.isEmpty {
                lines.append("auto-flash: profiles \(autoFlashProfiles.joined(separator: ", ")) from \(autoFlashPath); devices udev marks with FLASHCTL_PROFILE are flashed when plugged in")
            }
            switch server.ioNicenessApplied {
            case true?: lines.append("dashboard and API threads at niceness \(configured.ioNiceness)")
            case false?: lines.append("dashboard and API threads at normal priority (niceness \(configured.ioNiceness) needs root or CAP_SYS_NICE; --io-nice 0 to not ask)")
            case nil: break
            }
            let loops = configured.ioThreads
            lines.append("dashboards and API served by \(loops) thread\(loops == 1 ? "" : "s") (--io-threads)")
            if let farm = configured.farm {
                lines.append("farm: station \(farm.station) of the farm in \((try? FarmDatabaseURL.parse(farm.url).redacted) ?? farm.url)")
            }
            if interrupted > 0 { lines.append("\(interrupted) job(s) left unfinished by the last run are marked interrupted") }
            for device in emulated {
                lines.append("emulated device \(device.deviceId) on \(device.addressSelector), partitions in \(emulatedDirectory)/\(device.deviceId)")
            }
            FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
    }
}
