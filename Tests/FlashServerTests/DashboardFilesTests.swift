import Foundation
@testable import FlashServer
import Testing

/// The dashboard's files as a browser fetches them (the browser tests in Tests/Browser drive it).
@Suite struct DashboardFilesTests {
    @Test func thePageAndEveryModuleItImportsLoadWithoutTheTokenButTheDataNeedsIt() async throws {
        let token = "s3cret-token-for-the-bench"
        let harness = try await ServerHarness.start(devices: 1, token: token)
        defer { harness.removeFiles() }

        let page = try await harness.http("GET", "/")
        #expect(page.status == 200)
        #expect(page.headers["content-type"]?.hasPrefix("text/html") == true)
        #expect(page.text.contains(#"<script type="module" src="/assets/app.js">"#))

        // Every module reachable from app.js, following the imports as the browser does.
        var pending = ["app.js"], seen: Set<String> = []
        while let name = pending.popLast() {
            guard seen.insert(name).inserted else { continue }
            let file = try await harness.http("GET", "/assets/\(name)")
            #expect(file.status == 200, "/assets/\(name)")
            #expect(file.headers["content-type"]?.contains("javascript") == true, "/assets/\(name): \(file.headers["content-type"] ?? "")")
            for line in file.text.split(separator: "\n") where line.hasPrefix("import ") {
                if let from = line.range(of: #"from "./"#), let end = line[from.upperBound...].firstIndex(of: "\"") {
                    pending.append(String(line[from.upperBound..<end]))
                }
            }
        }
        #expect(seen.count >= 8)
        let css = try await harness.http("GET", "/assets/dashboard.css")
        #expect(css.status == 200)
        #expect(css.headers["content-type"]?.hasPrefix("text/css") == true)

        #expect(try await harness.http("GET", "/assets/missing.js").status == 404)
        #expect(try await harness.http("GET", "/api/jobs").status == 401)
        #expect(try await harness.http("GET", "/metrics").status == 401)
        // A page on another site gets not even the files.
        #expect(try await harness.http("GET", "/", headers: ["Origin": "http://evil.example"]).status == 403)
        await harness.stop()
    }

    @Test func aPageServedUnderAnIPAddressIsItsOwnOriginButANameIsNot() {
        let policy = AccessPolicy(token: "s3cret-token-for-the-bench", host: "0.0.0.0", allowedOrigins: [])
        #expect(policy.isAllowed(origin: "http://192.168.1.20:3001", port: 3001, authority: "192.168.1.20:3001"))
        #expect(policy.isAllowed(origin: "http://[fe80::1]:3001", port: 3001, authority: "[fe80::1]:3001"))
        #expect(policy.isAllowed(origin: "http://127.0.0.1:3001", port: 3001))
        // A DNS-rebound name always matches its own Host: names are never taken this way.
        #expect(!policy.isAllowed(origin: "http://evil.example:3001", port: 3001, authority: "evil.example:3001"))
        #expect(!policy.isAllowed(origin: "http://10.0.0.9:3001", port: 3001, authority: "192.168.1.20:3001"))
        #expect(!policy.isAllowed(origin: "http://192.168.1.20:3001", port: 3001, authority: "192.168.1.20.evil.example:3001"))
        #expect(!policy.isAllowed(origin: "http://999.1.1.1:3001", port: 3001, authority: "999.1.1.1:3001"))
    }
}
