import FlashEngine
import Foundation
import NIOSSL
import PostgresNIO

/// Where the farm's PostgreSQL is, from a libpq-style URL:
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...&sslrootcert=FILE&host=/SOCKET/DIR]`.
/// As with libpq, a password left out of the URL is looked up in the password file
/// (`$PGPASSFILE`, else `~/.pgpass`), and `sslmode` is one of disable, allow, prefer (the
/// default), require, verify-ca and verify-full.
public struct FarmDatabaseURL: Sendable, Equatable {
    public enum SSLMode: String, Sendable {
        case disable, allow, prefer, require, verifyCA = "verify-ca", verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    /// A directory holding the server's Unix socket (`?host=/run/postgresql`), instead of TCP.
    public var socketDirectory: String?
    public var user: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode
    public var sslRootCertificate: String?

    public static func parse(_ text: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> FarmDatabaseURL {
        guard let components = URLComponents(string: text), ["postgres", "postgresql"].contains(components.scheme ?? "") else {
            throw FlashError(.io, "--farm takes a URL such as postgres://flashctl@db.lab/flashctl, not '\(text)'")
        }
        var query: [String: String] = [:]
        for item in components.queryItems ?? [] { query[item.name] = item.value ?? "" }
        let user = components.user.flatMap { $0.removingPercentEncoding }.flatMap { $0.isEmpty ? nil : $0 }
            ?? query["user"] ?? environment["PGUSER"] ?? Self.currentUser()
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        let database = path.removingPercentEncoding.flatMap { $0.isEmpty ? nil : $0 } ?? query["dbname"] ?? user
        let socketDirectory = query["host"].flatMap { $0.hasPrefix("/") ? $0 : nil }
        let host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? query["host"].flatMap { $0.hasPrefix("/") ? nil : $0 } ?? "localhost"
        let port = components.port ?? query["port"].flatMap { Int($0) } ?? 5432
        let modeText = query["sslmode"] ?? environment["PGSSLMODE"] ?? "prefer"
        guard let mode = SSLMode(rawValue: modeText) else {
            throw FlashError(.io, "sslmode must be disable, allow, prefer, require, verify-ca or verify-full, not '\(modeText)'")
        }
        var url = FarmDatabaseURL(
            host: host, port: port, socketDirectory: socketDirectory, user: user,
            password: components.password?.removingPercentEncoding ?? query["password"],
            database: database, sslMode: mode, sslRootCertificate: query["sslrootcert"] ?? environment["PGSSLROOTCERT"])
        if url.password == nil {
            url.password = PasswordFile.lookup(host: socketDirectory == nil ? host : "localhost", port: port, database: database, user: user, environment: environment)
        }
        return url
    }

    /// The URL as logs and messages show it: never the password.
    public var redacted: String {
        let place = socketDirectory.map { "\($0)/.s.PGSQL.\(port)" } ?? "\(host):\(port)"
        return "postgres://\(user)@\(place)/\(database)"
    }

    static let connectTimeoutSeconds: Int64 = 5

    /// For the pool the station uses while it runs.
    func clientConfiguration() -> PostgresClient.Configuration {
        var configuration: PostgresClient.Configuration
        if let socketDirectory {
            configuration = .init(unixSocketPath: socketPath(socketDirectory), username: user, password: password, database: database)
        } else {
            let tls: PostgresClient.Configuration.TLS
            switch tlsUse() {
            case .disable: tls = .disable
            case .prefer(let configuration): tls = .prefer(configuration)
            case .require(let configuration): tls = .require(configuration)
            }
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
        }
        configuration.options.connectTimeout = .seconds(Self.connectTimeoutSeconds)
        configuration.options.maximumConnections = 8
        return configuration
    }

    /// For one connection: the first contact, whose error (unlike the pool's) says what is wrong.
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        var configuration: PostgresConnection.Configuration
        if let socketDirectory {
            configuration = .init(unixSocketPath: socketPath(socketDirectory), username: user, password: password, database: database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            switch tlsUse() {
            case .disable: tls = .disable
            case .prefer(let configuration): tls = .prefer(try NIOSSLContext(configuration: configuration))
            case .require(let configuration): tls = .require(try NIOSSLContext(configuration: configuration))
            }
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: tls)
        }
        configuration.options.connectTimeout = .seconds(Self.connectTimeoutSeconds)
        return configuration
    }

    private func socketPath(_ directory: String) -> String { "\(directory)/.s.PGSQL.\(port)" }

    private enum TLSUse {
        case disable, prefer(TLSConfiguration), require(TLSConfiguration)
    }

    /// libpq's meaning of each sslmode: prefer and require encrypt without checking the server,
    /// unless require is given a root certificate (then as verify-ca).
    private func tlsUse() -> TLSUse {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let sslRootCertificate {
            tls.trustRoots = .file(sslRootCertificate)
        }
        switch sslMode {
        case .disable:
            return .disable
        case .allow, .prefer:
            tls.certificateVerification = .none
            return .prefer(tls)
        case .require:
            tls.certificateVerification = sslRootCertificate == nil ? .none : .noHostnameVerification
            return .require(tls)
        case .verifyCA:
            tls.certificateVerification = .noHostnameVerification
            return .require(tls)
        case .verifyFull:
            tls.certificateVerification = .fullVerification
            return .require(tls)
        }
    }

    private static func currentUser() -> String {
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name { return String(cString: name) }
        return "postgres"
    }
}
