import Hummingbird
import HummingbirdWebSocket

/// `GET /`: what a browser sees at the server's address.
struct DashboardRoutes: Sendable {
    func add(to router: Router<BasicWebSocketRequestContext>) {
        router.get("/") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/html; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: Self.page))
            )
        }
    }

    static let page = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>flashctl</title></head>
        <body>
        <h1>flashctl</h1>
        <p>Live progress: WebSocket <code>/flash-progress</code>.
        API: <a href="/api/jobs">jobs</a>, <a href="/api/devices">devices</a>,
        <a href="/api/history">history</a>, <a href="/api/images">images</a>, <a href="/metrics">metrics</a>.</p>
        </body></html>
        """
}
