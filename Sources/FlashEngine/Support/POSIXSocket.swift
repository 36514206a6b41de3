#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A TCP socket with a deadline on every wait, for fastboot over TCP (client and emulated device).
///
/// Every wait for the socket is a `poll` on it and on a pipe that `interrupt()` writes to, so a peer that stops reading or answering never holds a thread past
/// its timeout, and another thread can end the wait at once (a cancelled job).
public final class POSIXSocket: @unchecked Sendable {
    private let fd: Int32
    /// A pipe that `interrupt()` writes a byte to and nobody reads: its read end, polled beside
    /// `fd` in every wait, then stays readable for good.
    private let wakeFDs: (read: Int32, write: Int32)
    /// Whether `fd` was closed: set once, under the lock, so no call uses a number reused since.
    private let closed = Mutex(false)
    /// "host:port" of the peer (or of the listening address), for messages.
    public let peer: String

    private init(fd: Int32, peer: String) {
        self.fd = fd
        self.peer = peer
        var pipeFDs: [Int32] = [-1, -1]
        if pipe(&pipeFDs) == 0 {
            for end in pipeFDs {
                _ = fcntl(end, F_SETFD, FD_CLOEXEC)
                _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            }
        }
        wakeFDs = (pipeFDs[0], pipeFDs[1])
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit {
        close()
        for wakeFD in [wakeFDs.read, wakeFDs.write] where wakeFD >= 0 { Glibc.close(wakeFD) }
    }

    /// Ends every wait on this socket, now and later, with `FlashError(.cancelled)`; the
    /// connection itself stays as it is (the caller closes it).
    public func interrupt() {
        var byte: UInt8 = 1
        _ = Glibc.write(wakeFDs.write, &byte, 1)
    }

    /// Connects within `timeoutMs`; a cancel of `control` ends the wait within a tenth of a second.
    public static func connect(host: String, port: UInt16, timeoutMs: Int, control: JobControl? = nil) throws -> POSIXSocket {
        let peer = "\(host):\(port)"
        var lastError = "no address"
        for address in try resolve(host: host, port: port) {
            let fd = socket(Int32(address.family), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { continue }
            var storage = address.storage
            let rc = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, address.length) }
            }
            if rc != 0 && errno != EINPROGRESS {
                lastError = String(cString: strerror(errno))
                Glibc.close(fd)
                continue
            }
            if rc != 0 {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                var ready: Int32 = 0
                let deadline = SystemClock().monotonicNanos() + UInt64(max(timeoutMs, 0)) * 1_000_000
                while ready == 0 || (ready < 0 && errno == EINTR) {
                    if control?.isCancelled == true {
                        Glibc.close(fd)
                        throw FlashError(.cancelled, "cancelled while connecting to tcp:\(peer)")
                    }
                    let now = SystemClock().monotonicNanos()
                    guard now < deadline else { ready = 0; break }
                    ready = poll(&pfd, 1, Int32(min((deadline - now) / 1_000_000 + 1, 100)))
                }
                if ready == 0 {
                    Glibc.close(fd)
                    throw FlashError(.timeout, "no answer from tcp:\(peer) within \(describe(milliseconds: timeoutMs))")
                }
                var soError: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length)
                if soError != 0 {
                    lastError = String(cString: strerror(soError))
                    Glibc.close(fd)
                    continue
                }
            }
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags & ~Int32(O_NONBLOCK))
            return POSIXSocket(fd: fd, peer: peer)
        }
        throw FlashError(.disconnected, "no fastboot device at tcp:\(peer) (\(lastError.lowercased()))")
    }

    public static func listen(host: String, port: UInt16) throws -> POSIXSocket {
        guard let address = try resolve(host: host, port: port).first else {
            throw FlashError(.io, "cannot resolve \(host)")
        }
        let fd = socket(Int32(address.family), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw FlashError(.io, "cannot create a socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var storage = address.storage
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, address.length) }
        }
        guard bound == 0, Glibc.listen(fd, 64) == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw FlashError(.io, "cannot listen on \(host):\(port): \(message)")
        }
        return POSIXSocket(fd: fd, peer: "\(host):\(port)")
    }

    /// The port this socket is bound to (the real one when listening on port 0).
    public var localPort: UInt16 {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let family = storage.ss_family
        return withUnsafePointer(to: &storage) { pointer in
            if family == sa_family_t(AF_INET6) {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    public func accept() throws -> POSIXSocket {
        while true {
            let client = Glibc.accept(fd, nil, nil)
            if client >= 0 { return POSIXSocket(fd: client, peer: peer) }
            if errno == EINTR || errno == ECONNABORTED { continue }
            throw FlashError(.disconnected, "stopped accepting connections on \(peer): \(String(cString: strerror(errno)))")
        }
    }

    public func readExactly(_ count: Int, timeoutMs: Int?) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            filled += try bytes.withUnsafeMutableBytes { raw in
                try read(into: UnsafeMutableRawBufferPointer(rebasing: raw[filled...]), timeoutMs: timeoutMs)
            }
        }
        return bytes
    }

    /// Reads what is available (at least one byte) into `buffer`; returns the count. Throws
    /// `.timeout` when nothing arrives for `timeoutMs` (nil: no limit).
    public func read(into buffer: UnsafeMutableRawBufferPointer, timeoutMs: Int?) throws -> Int {
        while true {
            let n = recv(fd, buffer.baseAddress!, buffer.count, Int32(MSG_DONTWAIT))
            if n > 0 { return n }
            if n == 0 { throw FlashError(.disconnected, "connection closed by peer tcp:\(peer)") }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: try waitReadable(timeoutMs: timeoutMs)
            default: throw FlashError(.disconnected, "connection to tcp:\(peer) lost: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Sends every byte; throws `.timeout` when the peer takes nothing for `timeoutMs` (nil: no
    /// limit, only `interrupt()` ends the wait).
    public func writeAll(_ bytes: UnsafeRawBufferPointer, timeoutMs: Int?) throws {
        try writeAll(bytes, UnsafeRawBufferPointer(start: nil, count: 0), timeoutMs: timeoutMs)
    }

    public func writeAll(_ bytes: [UInt8], timeoutMs: Int?) throws {
        try bytes.withUnsafeBytes { try writeAll($0, timeoutMs: timeoutMs) }
    }

    /// Sends `first` then `second` with as few system calls as the kernel allows (one `sendmsg`
    /// when the socket takes everything), e.g. a frame header and its payload. `timeoutMs` as
    /// for `writeAll(_:timeoutMs:)`: the longest the peer may take no byte.
    public func writeAll(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer, timeoutMs: Int?) throws {
        let total = first.count + second.count
        var sent = 0
        while sent < total {
            var vectors: [iovec] = []
            if sent < first.count {
                vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress! + sent), iov_len: first.count - sent))
            }
            if second.count > 0 {
                let skip = max(0, sent - first.count)
                vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress! + skip), iov_len: second.count - skip))
            }
            let n = vectors.withUnsafeMutableBufferPointer { buffer -> Int in
                var message = msghdr()
                message.msg_iov = buffer.baseAddress
                message.msg_iovlen = buffer.count
                return sendmsg(fd, &message, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            }
            if n > 0 {
                sent += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                guard try wait(for: Int16(POLLOUT), timeoutMs: timeoutMs) else {
                    throw FlashError(.timeout, "tcp:\(peer) stopped taking data (nothing accepted for \(Self.describe(milliseconds: timeoutMs ?? 0)))")
                }
            } else {
                throw FlashError(.disconnected, "connection to tcp:\(peer) lost: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Caps the kernel's send buffer, so bytes counted as sent are close to bytes the peer took.
    public func setSendBufferSize(_ bytes: Int) {
        setBufferSize(SO_SNDBUF, bytes)
    }

    /// Caps the kernel's receive buffer (a listener's is inherited by the connections it accepts).
    public func setReceiveBufferSize(_ bytes: Int) {
        setBufferSize(SO_RCVBUF, bytes)
    }

    private func setBufferSize(_ option: Int32, _ bytes: Int) {
        var size = Int32(clamping: bytes)
        setsockopt(fd, SOL_SOCKET, option, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Bytes written that the peer has not acknowledged yet (they sit in the kernel's send queue).
    public var unacknowledgedBytes: Int {
        var queued: Int32 = 0
        return ioctl(fd, UInt(TIOCOUTQ), &queued) == 0 ? Int(queued) : 0
    }

    /// Wakes a reader blocked on this socket; the connection then reads as closed.
    public func shutdown() {
        closed.withLock { closed in
            if !closed { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    public func close() {
        closed.withLock { closed in
            guard !closed else { return }
            closed = true
            _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
            Glibc.close(fd)
        }
    }

    /// Closes the connection abruptly: the peer gets a reset (ECONNRESET), not an orderly end of
    /// stream, the way a device that loses power or is unplugged looks from the host.
    public func abort() {
        closed.withLock { closed in
            guard !closed else { return }
            closed = true
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            Glibc.close(fd)
        }
    }

    private func waitReadable(timeoutMs: Int?) throws {
        guard try wait(for: Int16(POLLIN), timeoutMs: timeoutMs) else {
            throw FlashError(.timeout, "tcp:\(peer) sent nothing for \(Self.describe(milliseconds: timeoutMs ?? 0))")
        }
    }

    /// Blocks until the peer has closed the connection (or it is shut down or interrupted) without
    /// reading anything: how an emulated device that stopped taking data waits for its end.
    public func waitUntilClosed() throws {
        // POLLRDHUP (0x2000, Linux): the peer has shut down its side; glibc shows it only to _GNU_SOURCE.
        while try !wait(for: 0x2000, timeoutMs: nil) {}
    }

    /// Waits until the socket is ready for `events` (or in error, which the next call reports);
    /// false when `timeoutMs` passed first. Throws `.cancelled` once `interrupt()` was called.
    private func wait(for events: Int16, timeoutMs: Int?) throws -> Bool {
        let deadline = timeoutMs.map { SystemClock().monotonicNanos() + UInt64(max(0, $0)) * 1_000_000 }
        var fds = [pollfd(fd: fd, events: events, revents: 0), pollfd(fd: wakeFDs.read, events: Int16(POLLIN), revents: 0)]
        while true {
            var wait: Int32 = -1
            if let deadline {
                let now = SystemClock().monotonicNanos()
                wait = now >= deadline ? 0 : Int32(clamping: (deadline - now + 999_999) / 1_000_000)
            }
            let ready = poll(&fds, 2, wait)
            if ready < 0 {
                if errno == EINTR { continue }
                throw FlashError(.disconnected, "connection to tcp:\(peer) lost: \(String(cString: strerror(errno)))")
            }
            if fds[1].revents != 0 { throw FlashError(.cancelled, "the wait for tcp:\(peer) was interrupted") }
            if fds[0].revents != 0 { return true }
            if ready == 0 && wait >= 0 { return false }
        }
    }

    static func describe(milliseconds: Int) -> String {
        milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(milliseconds) ms"
    }

    private struct Address {
        var family: Int32
        var storage: sockaddr_storage
        var length: socklen_t
    }

    private static func resolve(host: String, port: UInt16) throws -> [Address] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let list else {
            throw FlashError(.deviceSelection, "cannot resolve host '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var addresses: [Address] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = list
        while let entry = cursor {
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { target in
                target.copyMemory(from: UnsafeRawBufferPointer(start: entry.pointee.ai_addr, count: Int(entry.pointee.ai_addrlen)))
            }
            addresses.append(Address(family: entry.pointee.ai_family, storage: storage, length: entry.pointee.ai_addrlen))
            cursor = entry.pointee.ai_next
        }
        return addresses
    }
}
