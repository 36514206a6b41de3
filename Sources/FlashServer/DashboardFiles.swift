import Foundation
import Hummingbird
import Logging

/// The browser dashboard: static files shipped as package resources (`Dashboard/`), served at
/// `/` and `/assets/...`. They hold no data, so they load without the access token; the page
/// then asks for the token once, for the API and the WebSocket.
enum DashboardFiles {
    /// The first of `candidates()` that holds the page.
    static var directory: String? {
        candidates().first { FileManager.default.fileExists(atPath: $0 + "/index.html") }
    }

    /// Beside the binary, as `swift build` puts the package's resources; then PREFIX/share/flashctl
    /// for PREFIX/bin/flashctl, where the .deb (/usr) and scripts/install.sh (/usr/local) put them.
    static func candidates(executable: String = executablePath()) -> [String] {
        let bin = (executable as NSString).deletingLastPathComponent
        let prefix = (bin as NSString).deletingLastPathComponent
        return [bin + "/flashctl_FlashServer.resources/Dashboard", prefix + "/share/flashctl/dashboard"]
    }

    /// The running binary, symbolic links resolved.
    static func executablePath() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// Requests for the dashboard's own files.
    static func isDashboardFile(_ request: Request) -> Bool {
        guard request.method == .get || request.method == .head else { return false }
        let path = request.uri.path
        return path == "/" || path == "/index.html" || path.hasPrefix("/assets/")
    }

    /// Serves the files when no route answered. `no-cache` with the file's ETag: a browser
    /// revalidates, so a new flashctl's dashboard is never mixed with an old cached module.
    static func middleware<Context: RequestContext>(directory: String, logger: Logger) -> FileMiddleware<Context, LocalFileSystem> {
        FileMiddleware(
            directory,
            cacheControl: CacheControl([(MediaType(type: .any), [.noCache])]),
            searchForIndexHtml: true,
            logger: logger
        )
    }
}
