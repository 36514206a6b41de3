import FlashEngine
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import NIOSSL
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// `flashctl serve`: the engine's jobs behind docs/PROTOCOL.md's WebSocket and HTTP API.
public final class FlashServer: Sendable {
    public let configuration: ServerConfiguration
    public let scheduler: JobScheduler
    public let history: HistoryStore
    private let emulated: EmulatedDevices?
    private let images: ImageDirectory
    private let metrics = ServerMetrics()
    private let recorder: HistoryRecorder
    private let boundPort: BoundPort
    private let logger: Logger
    private let shutdownTrigger = ShutdownTrigger()
    private let progressSocket: ProgressSocket
    private let autoFlash: AutoFlashService?
    private let farm: FarmLink?
    private let inventory: DeviceInventory
    private let starter: JobStarter
    private let ioNicenessSet = Mutex<Bool?>(nil)
    /// Jobs left unfinished by the previous run, marked interrupted at start.
    public let interruptedJobs: Int

    public init(configuration: ServerConfiguration, logger: Logger = Logger(label: "flashctl.serve")) throws {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        history = try HistoryStore(path: configuration.historyPath)
        interruptedJobs = try history.markUnfinishedAsInterrupted(now: SystemClock().epochMillis())
        images = try ImageDirectory(path: configuration.imageDirectory)
        let emulated = configuration.emulatedDevices > 0
            ? try EmulatedDevices(count: configuration.emulatedDevices, speedLimit: configuration.emulatedSpeed, slotted: configuration.emulatedSlots) : nil
        self.emulated = emulated
        let networkDevices: @Sendable () -> [FastbootDeviceInfo] = { emulated?.devices ?? [] }
        var schedulerConfiguration = configuration.scheduler
        schedulerConfiguration.station = configuration.farm?.station
        scheduler = JobScheduler(
            configuration: schedulerConfiguration,
            finder: FastbootDeviceFinder(listNetwork: networkDevices),
            broadcaster: EventBroadcaster(subscriberLimit: configuration.clientQueueLimit, delivery: .background)
        )
        recorder = HistoryRecorder(store: history, metrics: metrics, logger: logger)
        boundPort = BoundPort(configuration.port)
        inventory = DeviceInventory(network: networkDevices)
        starter = JobStarter(scheduler: scheduler, images: images, devices: inventory, allowedTCPDevices: configuration.allowedTCPDevices)
        let scheduler = self.scheduler, recorder = self.recorder, starter = self.starter, history = self.history
        let farm = try configuration.farm.map { try FarmLink(configuration: $0, scheduler: scheduler, starter: starter, history: history, logger: logger) }
        self.farm = farm
        progressSocket = ProgressSocket(
            scheduler: scheduler, metrics: metrics, queueLimit: configuration.clientQueueLimit, maxMessageSize: configuration.maxFrameSize, farm: farm)
        scheduler.onJobChanged = { status in
            recorder.jobChanged(status) { scheduler.jobs() }
            farm?.jobChanged(status)
        }
        // A broken profiles file stops the server here, before it listens.
        if let path = configuration.autoFlashProfiles {
            let profiles = try AutoFlashProfiles.load(path: path, resolveImage: images.resolve)
            autoFlash = try AutoFlashService(profiles: profiles, scheduler: scheduler, history: history, logger: logger)
        } else {
            autoFlash = nil
        }
    }

    /// The auto-flash profiles in use (`--auto-flash`), by name.
    public var autoFlashProfiles: [String] { autoFlash?.profiles.profiles.keys.sorted() ?? [] }

    /// Whether the event loop threads got `configuration.ioNiceness`; nil until `run` has tried
    /// (before it listens), and when the niceness is 0.
    public var ioNicenessApplied: Bool? { ioNicenessSet.withLock { $0 } }

    /// The port clients connect to (the real one once `run` has bound it).
    public var port: Int { boundPort.value }

    public var emulatedDevices: [FastbootDeviceInfo] { emulated?.devices ?? [] }

    /// Where the emulated devices keep their partitions (one folder per serial).
    public var emulatedDevicesDirectory: String? { emulated?.directory }

    /// Serves until `shutdown()`; `onListening` gets the address once the port is bound.
    public func run(onListening: @escaping @Sendable (String) -> Void = { _ in }) async throws {
        let router = Router(context: ServerRequestContext.self)
        let policy = AccessPolicy(token: configuration.token, host: configuration.host, allowedOrigins: configuration.allowedOrigins)
        router.add(middleware: AccessMiddleware(policy: policy, port: boundPort, isPublic: DashboardFiles.isDashboardFile))
        guard let dashboard = DashboardFiles.directory else {
            throw FlashError(.io, "the dashboard's files are missing: looked in \(DashboardFiles.candidates().joined(separator: " and "))")
        }
        router.add(middleware: DashboardFiles.middleware(directory: dashboard, logger: logger))
        let socket = progressSocket, port = boundPort
        for path in ProgressSocket.paths {
            router.ws(RouterPath(path)) { _, _ in
                .upgrade([:])
            } onUpgrade: { inbound, outbound, context in
                try await socket.serve(
                    inbound: inbound, outbound: outbound, request: context.request,
                    jobId: context.requestContext.parameters.get("jobId"),
                    refusal: policy.socketRefusal(for: context.request, port: port.value),
                    channel: context.requestContext.channel)
            }
        }
        let inventory = self.inventory
        APIRoutes(
            scheduler: scheduler, images: images, history: history,
            devices: inventory, metrics: metrics, farm: farm, starter: starter
        ).add(to: router)

        let boundPort = self.boundPort, host = configuration.host
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: configuration.ioThreads)
        let webSocketResponder = router.buildResponder()
        ConnectionCounts.raiseOpenFileLimit()
        let connections = ConnectionCounts(perPeer: configuration.maxConnectionsPerPeer)
        let tls = try ServerTLS.configuration(certificate: configuration.tlsCertificatePath, key: configuration.tlsKeyPath)
        let scheme = tls == nil ? "http" : "https"
        let app = Application(
            router: router,
            server: HummingbirdCore.HTTPServerBuilder { [configuration] responder in
                // Counted before anything else; the head deadline sees what TLS has decrypted.
                let http = RequestHeadDeadline(
                    inner: KeepAliveUpgradeChannel(
                        responder: responder, webSocketResponder: webSocketResponder,
                        configuration: .init(
                            http1: .init(idleTimeout: .nanoseconds(Int64(configuration.idleTimeout * 1e9))),
                            // Frames up to 4 MiB are read whole, so that one over the message limit
                            // (ProgressSocket) is answered 1009 on a connection the client can still
                            // read: refused at its header, the client would be cut off mid-send and
                            // get a reset instead of the close frame.
                            ws: .init(maxFrameSize: max(configuration.maxFrameSize, 4 << 20), autoPing: .enabled(timePeriod: .seconds(30)), closeTimeout: .seconds(3)))),
                    seconds: configuration.idleTimeout)
                if let tls {
                    return ConnectionCap(inner: try TLSChannel(http, tlsConfiguration: tls), counts: connections)
                }
                return ConnectionCap(inner: http, counts: connections)
            },
            // A backlog as long as the kernel allows (somaxconn): a peer connecting by the thousand
            // fills a short one, and then every other client's SYN is dropped and retried a
            // second later.
            configuration: .init(address: .hostname(host, port: configuration.port), serverName: "flashctl", backlog: 4096),
            onServerRunning: { channel in
                boundPort.bound(to: channel.localAddress?.port)
                let shown = host.contains(":") ? "[\(host)]" : host
                onListening("\(scheme)://\(shown):\(boundPort.value)")
            },
            eventLoopGroupProvider: .shared(loops),
            logger: logger
        )
        if configuration.ioNiceness != 0 {
            let applied = await EventLoopPriority.set(configuration.ioNiceness, on: app.eventLoopGroup)
            ioNicenessSet.withLock { $0 = applied }
            if applied {
                logger.info("event loop threads run at niceness \(configuration.ioNiceness)")
            } else {
                logger.debug("event loop threads keep their niceness: \(configuration.ioNiceness) needs root or CAP_SYS_NICE")
            }
        }
        var services: [any Service] = [app]
        if let farm {
            let address = stationAddress(scheme: scheme)
            try await farm.join(address: address())
            let scheduler = self.scheduler
            let port = boundPort
            services.append(FarmHeartbeat(
                link: farm, address: { port.isBound ? address() : nil },
                devices: { await (try? NIOThreadPool.singleton.runIfActive { inventory.devices(busy: scheduler.busyDevices()) }) ?? [] },
                runningJobs: { scheduler.jobs().filter { $0.state == .running || $0.state == .paused }.count }))
        }
        var groupConfiguration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [], logger: logger)
        // A client that reads nothing cannot hold the process up: after this, connections are cut.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(5)
        let group = ServiceGroup(configuration: groupConfiguration)
        await shutdownTrigger.set(group)
        do {
            try autoFlash?.start()
            try await group.run()
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            try? await loops.shutdownGracefully()
            let shown = host.contains(":") ? "[\(host)]" : host
            throw FlashError(.io, "cannot listen on \(shown):\(configuration.port): the address is already in use (another flashctl serve?); choose another port with --port (-p), or --port 0 for any free one")
        } catch {
            try? await loops.shutdownGracefully()
            throw error
        }
        try? await loops.shutdownGracefully()
    }

    /// Where other stations' users reach this one: `--station-address`, or the address it
    /// listens on (the machine's name for an unspecified one), read when asked (port 0 is bound late).
    private func stationAddress(scheme: String) -> @Sendable () -> String {
        if let given = configuration.farm?.address { return { given } }
        let host = ["0.0.0.0", "::", ""].contains(configuration.host) ? ProcessInfo.processInfo.hostName : configuration.host
        let shown = host.contains(":") ? "[\(host)]" : host
        let port = boundPort
        return { "\(scheme)://\(shown):\(port.value)" }
    }

    /// Stops every job (each ends `server_stopped` and is recorded interrupted), then closes every
    /// client with close 1001 and stops listening.
    public func shutdown() async {
        autoFlash?.stop()
        let stopped = scheduler.shutdown(timeout: configuration.shutdownGrace)
        if !stopped {
            logger.warning("some jobs did not stop within \(configuration.shutdownGrace) s")
        }
        recorder.flush()
        emulated?.stop()
        // Each client gets what is queued for it (the jobs' ends), then its connection closes.
        scheduler.broadcaster.closeAll()
        await progressSocket.open.waitUntilNone(seconds: 3)
        await shutdownTrigger.fire()
    }
}

/// Hands `shutdown()` the running service group, whenever either comes first.
private actor ShutdownTrigger {
    private var group: ServiceGroup?
    private var fired = false

    func set(_ group: ServiceGroup) async {
        self.group = group
        if fired { await group.triggerGracefulShutdown() }
    }

    func fire() async {
        fired = true
        await group?.triggerGracefulShutdown()
    }
}
