import HummingbirdCore
import Logging
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Caps open connections, from each peer address and in all, so that one client opening
/// connections by the thousand (idle ones, half-open ones) cannot use up the process's file
/// descriptors and lock every other client out. A connection over a cap is closed at once.
struct ConnectionCap<Inner: ServerChildChannel>: ServerChildChannel {
    typealias Value = Inner.Value

    let inner: Inner
    let counts: ConnectionCounts

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let peer = channel.remoteAddress?.ipAddress ?? "?"
        guard counts.open(from: peer) else {
            logger.debug("connection from \(peer) refused: too many open connections")
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
        }
        channel.closeFuture.whenComplete { _ in counts.closed(from: peer) }
        return inner.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

/// Open connections by peer address, shared by every connection of a server.
final class ConnectionCounts: Sendable {
    let perPeer: Int
    let total: Int
    private let open = Mutex((byPeer: [String: Int](), total: 0))

    /// `total` nil: what the open-file limit leaves after a reserve for images, devices and the
    /// history (at least 64).
    init(perPeer: Int, total: Int? = nil) {
        self.perPeer = perPeer
        var limit = rlimit()
        let files = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(clamping: limit.rlim_cur) : 1024
        self.total = total ?? max(64, files - 256)
    }

    /// Raises the process's soft open-file limit to its hard limit (at most 65,536), as servers
    /// do: the default soft limit of many systems (1,024) is less than a bench of dashboards needs.
    static func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let wanted = min(limit.rlim_max, 65_536)
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
    }

    /// Counts a new connection; false (and not counted) when a cap is reached.
    func open(from peer: String) -> Bool {
        open.withLock { open in
            let mine = open.byPeer[peer, default: 0]
            guard mine < perPeer, open.total < total else { return false }
            open.byPeer[peer] = mine + 1
            open.total += 1
            return true
        }
    }

    func closed(from peer: String) {
        open.withLock { open in
            let left = open.byPeer[peer, default: 1] - 1
            open.byPeer[peer] = left > 0 ? left : nil
            open.total -= 1
        }
    }
}
