import Foundation
import Synchronization
import HTTPTypes
import Hummingbird

/// Who may drive the flasher: docs/PROTOCOL.md's security defaults.
///
/// - Token: when one is configured, every request carries it as `Authorization: Bearer ...` or
///   `?token=...` (browsers cannot set headers on a WebSocket).
/// - Origin: a request from a web page (it has an `Origin` header) must come from the server's
///   own origin (loopback names, the address it listens on, or the IP address the page used to
///   reach it, with its port) or the allow-list.
///   That stops another site, or a DNS-rebound name, from driving the flasher through the
///   user's browser. Browsers send `http(s)://...` or `null`; requests without `Origin`, or with
///   another scheme (WebSocket libraries send `ws://host`), are not from a web page.
struct AccessPolicy: Sendable {
    let token: String?
    let host: String
    let allowedOrigins: Set<String>

    init(token: String?, host: String, allowedOrigins: [String]) {
        self.token = token.flatMap { $0.isEmpty ? nil : $0 }
        self.host = host
        self.allowedOrigins = Set(allowedOrigins.map { Self.normalize($0) })
    }

    /// Decided by the parsed address, never by how a name begins: `127.0.0.2` and `::1` are
    /// loopback, a name such as `127.example.com` is not (it resolves to whatever its DNS says).
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            return UInt32(bigEndian: v4.s_addr) >> 24 == 127
        }
        var v6 = in6_addr()
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if inet_pton(AF_INET6, bare, &v6) == 1 {
            var loopback = in6_addr()
            _ = inet_pton(AF_INET6, "::1", &loopback)
            return withUnsafeBytes(of: &v6) { Array($0) } == withUnsafeBytes(of: &loopback) { Array($0) }
        }
        return false
    }

    /// Why a request is refused.
    enum Refusal {
        case noToken
        case origin(String)
    }

    /// nil when the request may go on. `needsToken` is false for the dashboard's static files.
    func check(_ request: Request, port: Int, needsToken: Bool = true) -> Refusal? {
        if let token, needsToken {
            guard let given = Self.token(in: request), Self.constantTimeEqual(given, token) else { return .noToken }
        }
        for origin in request.headers[values: .origin] where !isAllowed(origin: origin, port: port, authority: request.head.authority) {
            return .origin(origin)
        }
        return nil
    }

    /// The HTTP answer to a refused request: 401 or 403 with the reason.
    func refusal(for request: Request, port: Int, needsToken: Bool = true) -> APIError? {
        switch check(request, port: port, needsToken: needsToken) {
        case nil: return nil
        case .noToken:
            return APIError(.unauthorized, "an access token is required: send 'Authorization: Bearer TOKEN' or add ?token=TOKEN")
        case .origin(let origin):
            return APIError(.forbidden, "requests from the web page at \(origin) are not allowed; start the server with --allow-origin \(origin) to allow it")
        }
    }

    /// The reason a refused WebSocket is closed with (code 1008): short, since a close reason
    /// holds at most 123 bytes.
    func socketRefusal(for request: Request, port: Int) -> String? {
        switch check(request, port: port) {
        case nil: return nil
        case .noToken: return "token required: add ?token=TOKEN"
        case .origin(let origin):
            let reason = "origin \(origin) not allowed (serve --allow-origin)"
            return reason.utf8.count <= 123 ? reason : "origin not allowed (serve --allow-origin)"
        }
    }

    /// `authority` is the request's Host: a page the server itself served under an IP address
    /// (a dashboard opened at http://192.168.1.20:3001 on a server listening on 0.0.0.0) is its own.
    /// Host names are not taken this way: a DNS-rebound name would always match its own Host.
    func isAllowed(origin: String, port: Int, authority: String? = nil) -> Bool {
        let origin = Self.normalize(origin)
        let fromPage = origin == "null" || origin.hasPrefix("http://") || origin.hasPrefix("https://")
        if !fromPage || allowedOrigins.contains(origin) { return true }
        if let authority = authority.map(Self.normalize), Self.isIPAddress(authority: authority),
           origin == "http://\(authority)" || origin == "https://\(authority)" {
            return true
        }
        var own = ["localhost", "127.0.0.1", "[::1]"]
        if !host.isEmpty, host != "0.0.0.0", host != "::" {
            own.append(host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host)
        }
        return own.contains { origin == "http://\($0):\(port)" || origin == "https://\($0):\(port)" }
    }

    /// "192.168.1.20:3001" or "[fe80::1]:3001": an address, not a name.
    static func isIPAddress(authority: String) -> Bool {
        if authority.hasPrefix("[") {
            guard let end = authority.firstIndex(of: "]") else { return false }
            let inside = authority[authority.index(after: authority.startIndex)..<end]
            return !inside.isEmpty && inside.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
        }
        let host = authority.split(separator: ":", maxSplits: 1).first ?? ""
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { part in
            !part.isEmpty && part.count <= 3 && part.allSatisfy(\.isASCII) && part.allSatisfy(\.isNumber) && Int(part).map { $0 <= 255 } == true
        }
    }

    private static func token(in request: Request) -> String? {
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { return String(parts[1]) }
        }
        return request.uri.queryParameters["token"].map(String.init)
    }

    private static func normalize(_ origin: String) -> String {
        var text = origin.lowercased()
        while text.hasSuffix("/") { text.removeLast() }
        return text
    }

    private static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// Applies the access policy to every HTTP request. WebSocket upgrades to `/flash-progress` go
/// through: a refused one is accepted and closed with 1008 and its reason (`ProgressSocket`),
/// which a browser shows, where it shows nothing of an HTTP refusal.
struct AccessMiddleware<Context: RequestContext>: RouterMiddleware {
    let policy: AccessPolicy
    let port: BoundPort
    /// Requests that need no token (the dashboard's files); the Origin check still applies.
    let isPublic: @Sendable (Request) -> Bool

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.headers[.upgrade]?.lowercased() == "websocket", ProgressSocket.serves(path: request.uri.path) {
            return try await next(request, context)
        }
        if let refusal = policy.refusal(for: request, port: port.value, needsToken: !isPublic(request)) {
            throw refusal
        }
        return try await next(request, context)
    }
}

/// The port the server really listens on (known once it is bound, when 0 was asked for).
final class BoundPort: Sendable {
    private let port: Mutex<(value: Int, bound: Bool)>

    init(_ port: Int) { self.port = Mutex((port, false)) }

    var value: Int { port.withLock { $0.value } }

    /// Whether the server listens yet.
    var isBound: Bool { port.withLock { $0.bound } }

    func bound(to value: Int?) {
        port.withLock { $0 = (value ?? $0.value, true) }
    }
}
