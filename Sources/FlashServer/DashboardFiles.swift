import Foundation
import Hummingbird
import Logging

/// The browser dashboard: static files shipped as package resources (`Dashboard/`), served at
/// `/` and `/assets/...`. They hold no data, so they load without the access token; the page
/// then asks for the token once, for the API and the WebSocket.
enum DashboardFiles {
    /// Where the resources are: next to the executable (`flashctl_FlashServer.resources`) once built.
    static var directory: String? {
        Bundle.module.url(forResource: "Dashboard", withExtension: nil)?.path
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
