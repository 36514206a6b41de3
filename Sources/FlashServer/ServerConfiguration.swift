import FlashEngine
import Foundation
import NIOCore

/// How `flashctl serve` runs.
public struct ServerConfiguration: Sendable {
    public var host: String
    /// 0 picks a free port (printed at start).
    public var port: Int
    /// Required from clients when set; required to be set when `host` is not loopback.
    public var token: String?
    /// Origins besides the server's own that may open the WebSocket or call the API from a page.
    public var allowedOrigins: [String]
    /// Fastboot-over-TCP devices the API may reach (`--allow-tcp`): "HOST" (any port) or
    /// "HOST:PORT". The server's own emulated devices are always allowed. Without this, any API
    /// client could make the server connect anywhere and so probe ports.
    public var allowedTCPDevices: [String] = []
    /// Images named in API requests must be inside this directory.
    public var imageDirectory: String
    public var historyPath: String
    public var scheduler: JobScheduler.Configuration
    /// Fastboot devices emulated inside the server (`--emulate N`), for trying without hardware.
    public var emulatedDevices: Int
    public var emulatedSpeed: Int64?
    /// The emulated devices have A/B slots (`--emulate-slots`).
    public var emulatedSlots = false
    /// The auto-flash profiles file (`--auto-flash`); nil: no auto-flash.
    public var autoFlashProfiles: String?
    /// Largest WebSocket frame accepted from a client; larger ones close that connection (1009).
    public var maxFrameSize: Int
    /// Events queued for one client before it is disconnected as too slow.
    public var clientQueueLimit: Int
    /// Seconds running jobs get to stop on shutdown.
    public var shutdownGrace: Double
    /// Seconds an HTTP connection may sit without a request in progress (idle keep-alive, or a
    /// request whose head has not fully arrived) before it is closed. WebSocket connections,
    /// once upgraded, are kept alive by their pings instead.
    public var idleTimeout: Double = 30
    /// Open connections from one peer address; more are closed at once. The default lets a
    /// thousand dashboards share one address (a proxy, a bench).
    public var maxConnectionsPerPeer = 1024
    /// PEM certificate chain and private key: serve https and wss instead of http and ws.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// Set: this server is a station of a farm sharing one PostgreSQL (`serve --farm`).
    public var farm: FarmConfiguration?

    /// Whether clients talk to the server over TLS.
    public var usesTLS: Bool { tlsCertificatePath != nil }

    /// Whether only this machine can reach the server (a loopback address).
    public var listensOnLoopbackOnly: Bool { AccessPolicy.isLoopback(host) }
    /// Niceness the event loop threads (dashboards, API) ask for, so that messages go out sooner
    /// while flashing keeps every core busy; below 0 needs root or CAP_SYS_NICE and is skipped
    /// without it. 0 (the default) leaves them as they are.
    public var ioNiceness: Int32
    /// Event loop threads for dashboards and the API (`defaultIOThreads` unless told).
    public var ioThreads: Int

    public init(
        host: String = "127.0.0.1", port: Int = 3001, token: String? = nil, allowedOrigins: [String] = [],
        imageDirectory: String = ServerConfiguration.defaultImageDirectory(), historyPath: String = HistoryStore.defaultPath(),
        scheduler: JobScheduler.Configuration = .init(), emulatedDevices: Int = 0, emulatedSpeed: Int64? = nil,
        maxFrameSize: Int = 16 * 1024, clientQueueLimit: Int = 1024, shutdownGrace: Double = 10, autoFlashProfiles: String? = nil,
        ioNiceness: Int32 = 0, ioThreads: Int = ServerConfiguration.defaultIOThreads()
    ) {
        self.host = host
        self.port = port
        self.token = token
        self.allowedOrigins = allowedOrigins
        self.imageDirectory = imageDirectory
        self.historyPath = historyPath
        self.scheduler = scheduler
        self.emulatedDevices = emulatedDevices
        self.emulatedSpeed = emulatedSpeed
        self.maxFrameSize = maxFrameSize
        self.clientQueueLimit = clientQueueLimit
        self.shutdownGrace = shutdownGrace
        self.autoFlashProfiles = autoFlashProfiles
        self.ioNiceness = ioNiceness
        self.ioThreads = ioThreads
    }

    /// Half the cores, at least one. Writing a message to many dashboards comes in bursts (every
    /// client at once, as jobs start and end); with a loop on every core, such a burst takes them
    /// all just when the jobs' threads need to wake up, and a flash that waits for a core loses
    /// time it never makes up. One loop writes 1,000 clients' messages in a few milliseconds.
    /// The price: when flashing alone keeps every core busy, fewer loops get a smaller share of
    /// the CPU, and messages arrive later (docs/performance.md, "The progress server under load").
    public static func defaultIOThreads(cores: Int = System.coreCount) -> Int {
        max(1, cores / 2)
    }

    /// `$XDG_DATA_HOME/flashctl/images` (`~/.local/share/flashctl/images`).
    public static func defaultImageDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let data = environment["XDG_DATA_HOME"], !data.isEmpty { return data + "/flashctl/images" }
        let home = environment["HOME"].flatMap { $0.isEmpty || $0 == "/" ? nil : $0 } ?? "/var/lib"
        return home + (home == "/var/lib" ? "/flashctl/images" : "/.local/share/flashctl/images")
    }

    /// Refuses settings that would expose a flasher: a non-loopback address without a token.
    public func validate() throws {
        if !AccessPolicy.isLoopback(host), (token ?? "").isEmpty {
            throw FlashError(.jobState, "listening on \(host) (not loopback) requires an access token: give --token or --token-file")
        }
        if let token, token.count < 16 {
            throw FlashError(.jobState, "the access token must be at least 16 characters")
        }
        guard (0...65535).contains(port) else {
            throw FlashError(.jobState, "port \(port) is not a TCP port")
        }
        guard (-20...19).contains(ioNiceness) else {
            throw FlashError(.jobState, "a niceness is from -20 to 19, not \(ioNiceness)")
        }
        if (tlsCertificatePath == nil) != (tlsKeyPath == nil) {
            throw FlashError(.jobState, "TLS needs both a certificate (--tls-cert) and its private key (--tls-key)")
        }
        if maxConnectionsPerPeer < 1 {
            throw FlashError(.jobState, "at least one connection per peer must be allowed, not \(maxConnectionsPerPeer)")
        }
        if !(idleTimeout > 0 && idleTimeout <= 3600) {
            throw FlashError(.jobState, "an idle timeout is from 0 to 3600 seconds, not \(idleTimeout)")
        }
        if !(1...256).contains(ioThreads) {
            throw FlashError(.jobState, "event loop threads are from 1 to 256, not \(ioThreads)")
        }
    }
}
