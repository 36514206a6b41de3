import Foundation
import Synchronization
import Testing
@testable import FlashEngine

private enum FieldType {
    case string
    case integer
    case number
}

private let jobOnly = JobInfo(jobId: "job_3f9a1c2e", deviceId: "ABC123XYZ")
private let fullJob = JobInfo(
    jobId: "job_3f9a1c2e", deviceId: "ABC123XYZ", deviceName: "Pixel 7", image: "system.img", partition: "system")
private let time: Int64 = 1_703_001_234_567

/// Parses `line` and checks it has exactly `fields` (name and type), and that `type` comes first.
@discardableResult
private func check(_ line: String?, type: String, fields: [String: FieldType],
                   sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
    let line = try #require(line, sourceLocation: sourceLocation)
    #expect(!line.contains("\n"), sourceLocation: sourceLocation)
    #expect(line.hasPrefix("{\"type\":\"\(type)\","), sourceLocation: sourceLocation)
    let object = try #require(
        try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], sourceLocation: sourceLocation)
    var expected = fields
    expected["type"] = .string
    #expect(Set(object.keys) == Set(expected.keys), sourceLocation: sourceLocation)
    #expect(object["type"] as? String == type, sourceLocation: sourceLocation)
    for (key, kind) in expected {
        guard let value = object[key] else { continue }
        switch kind {
        case .string:
            #expect(value is String, "\(key) should be a string", sourceLocation: sourceLocation)
        case .integer:
            // An integer literal in the text, not `1.0` or `"1"`.
            let pattern = "\"\(key)\":-?[0-9]+[,}]"
            #expect(line.range(of: pattern, options: .regularExpression) != nil,
                    "\(key) should be an integer in \(line)", sourceLocation: sourceLocation)
            #expect(value is NSNumber && !(value is String), sourceLocation: sourceLocation)
        case .number:
            let pattern = "\"\(key)\":-?[0-9]+(\\.[0-9])?[,}]"
            #expect(line.range(of: pattern, options: .regularExpression) != nil,
                    "\(key) should be a number with at most one decimal in \(line)", sourceLocation: sourceLocation)
            #expect(value is NSNumber, sourceLocation: sourceLocation)
        }
    }
    return object
}

private let jobFields: [String: FieldType] = ["jobId": .string, "deviceId": .string, "timestamp": .integer]
private let extraFields: [String: FieldType] = ["deviceName": .string, "image": .string, "partition": .string]

private func merged(_ parts: [String: FieldType]...) -> [String: FieldType] {
    parts.reduce(into: [:]) { $0.merge($1) { a, _ in a } }
}

private let progressSnapshot = ProgressSnapshot(
    progress: 45.5, stage: "Writing system", bytesTransferred: 1_953_857_536, totalBytes: 4_294_967_296,
    transferSpeed: 21_250_000, estimatedTimeRemaining: 110)

@Suite struct FlashEventJSONTests {
    @Test func startedMatchesProtocol() throws {
        let event = FlashEvent.started(jobOnly, stage: "Initializing", totalBytes: 4_294_967_296, timestamp: time)
        let object = try check(event.protocolJSON(), type: "flash_started",
                               fields: merged(jobFields, ["stage": .string, "totalBytes": .integer]))
        #expect(object["totalBytes"] as? Int64 == 4_294_967_296)
        // Byte for byte the example of docs/PROTOCOL.md.
        #expect(event.protocolJSON() ==
            #"{"type":"flash_started","jobId":"job_3f9a1c2e","deviceId":"ABC123XYZ","stage":"Initializing","totalBytes":4294967296,"timestamp":1703001234567}"#)
    }

    @Test func progressMatchesProtocol() throws {
        let event = FlashEvent.progress(jobOnly, progressSnapshot, timestamp: time)
        let object = try check(event.protocolJSON(), type: "flash_progress", fields: merged(jobFields, [
            "progress": .number, "stage": .string, "bytesTransferred": .integer, "totalBytes": .integer,
            "transferSpeed": .integer, "estimatedTimeRemaining": .integer,
        ]))
        #expect((object["progress"] as? NSNumber)?.doubleValue == 45.5)
        #expect((object["timestamp"] as? NSNumber)?.int64Value == time)
        #expect(event.protocolJSON() ==
            #"{"type":"flash_progress","jobId":"job_3f9a1c2e","deviceId":"ABC123XYZ","progress":45.5,"stage":"Writing system","bytesTransferred":1953857536,"totalBytes":4294967296,"transferSpeed":21250000,"estimatedTimeRemaining":110,"timestamp":1703001234567}"#)
    }

    @Test func progressWithUnknownEtaSendsZero() throws {
        var snapshot = progressSnapshot
        snapshot.estimatedTimeRemaining = nil
        snapshot.progress = 100
        let line = FlashEvent.progress(jobOnly, snapshot, timestamp: time).protocolJSON()
        let object = try check(line, type: "flash_progress", fields: merged(jobFields, [
            "progress": .number, "stage": .string, "bytesTransferred": .integer, "totalBytes": .integer,
            "transferSpeed": .integer, "estimatedTimeRemaining": .integer,
        ]))
        #expect((object["estimatedTimeRemaining"] as? NSNumber)?.intValue == 0)
        #expect(line?.contains(#""progress":100,"#) == true)
    }

    @Test func progressHasAtMostOneDecimal() {
        #expect(FlashEvent.formatPercent(45.5) == "45.5")
        #expect(FlashEvent.formatPercent(33.333333) == "33.3")
        #expect(FlashEvent.formatPercent(0.1 + 0.2) == "0.3")
        #expect(FlashEvent.formatPercent(99.9) == "99.9")
        #expect(FlashEvent.formatPercent(100) == "100")
        #expect(FlashEvent.formatPercent(0) == "0")
        #expect(FlashEvent.formatPercent(-3) == "0")
        #expect(FlashEvent.formatPercent(.nan) == "0")
        #expect(FlashEvent.formatPercent(250) == "100")
    }

    @Test func completedMatchesProtocolWithSummary() throws {
        let summary = JobSummary(bytes: 4_294_967_296, durationMs: 192_000, averageSpeed: 22_369_621)
        let object = try check(FlashEvent.completed(jobOnly, summary: summary, timestamp: time).protocolJSON(),
                               type: "flash_completed",
                               fields: merged(jobFields, ["totalBytes": .integer, "averageSpeed": .integer, "durationMs": .integer]))
        #expect((object["averageSpeed"] as? NSNumber)?.int64Value == 22_369_621)
        #expect((object["durationMs"] as? NSNumber)?.int64Value == 192_000)
        #expect((object["totalBytes"] as? NSNumber)?.int64Value == 4_294_967_296)
    }

    @Test func failedMatchesProtocol() throws {
        let object = try check(
            FlashEvent.failed(jobOnly, error: "USB connection lost during transfer", reason: nil, timestamp: time).protocolJSON(),
            type: "flash_failed", fields: merged(jobFields, ["error": .string]))
        #expect(object["error"] as? String == "USB connection lost during transfer")
        #expect(FlashEvent.failed(jobOnly, error: "USB connection lost during transfer", reason: nil, timestamp: time).protocolJSON() ==
            #"{"type":"flash_failed","jobId":"job_3f9a1c2e","deviceId":"ABC123XYZ","error":"USB connection lost during transfer","timestamp":1703001234567}"#)
    }

    @Test func cancelledCarriesReason() throws {
        let object = try check(
            FlashEvent.failed(jobOnly, error: "Flash cancelled", reason: "cancelled", timestamp: time).protocolJSON(),
            type: "flash_failed", fields: merged(jobFields, ["error": .string, "reason": .string]))
        #expect(object["reason"] as? String == "cancelled")
    }

    @Test func pausedAndResumedMatchProtocol() throws {
        try check(FlashEvent.paused(jobOnly, timestamp: time).protocolJSON(), type: "flash_paused", fields: jobFields)
        try check(FlashEvent.resumed(jobOnly, timestamp: time).protocolJSON(), type: "flash_resumed", fields: jobFields)
        #expect(FlashEvent.paused(jobOnly, timestamp: time).protocolJSON() ==
            #"{"type":"flash_paused","jobId":"job_3f9a1c2e","deviceId":"ABC123XYZ","timestamp":1703001234567}"#)
    }

    @Test func pong() throws {
        let line = FlashEvent.pongJSON(timestamp: time)
        #expect(line == #"{"type":"pong","timestamp":1703001234567}"#)
        try check(line, type: "pong", fields: ["timestamp": .integer])
    }

    @Test func deviceMessageIsOurOwnType() throws {
        let event = FlashEvent.deviceMessage(jobOnly, text: "erasing userdata...", timestamp: time)
        #expect(!event.isProtocolMessage)
        #expect(!event.isLifecycle)
        let object = try check(event.protocolJSON(), type: "device_message", fields: merged(jobFields, ["text": .string]))
        #expect(object["text"] as? String == "erasing userdata...")
    }

    @Test func extrasAppearWhenKnown() throws {
        let events: [(FlashEvent, String, [String: FieldType])] = [
            (.started(fullJob, stage: "Initializing", totalBytes: 10, timestamp: time), "flash_started",
             ["stage": .string, "totalBytes": .integer]),
            (.progress(fullJob, progressSnapshot, timestamp: time), "flash_progress", [
                "progress": .number, "stage": .string, "bytesTransferred": .integer, "totalBytes": .integer,
                "transferSpeed": .integer, "estimatedTimeRemaining": .integer,
            ]),
            (.completed(fullJob, summary: JobSummary(bytes: 1, durationMs: 2, averageSpeed: 500), timestamp: time),
             "flash_completed", ["totalBytes": .integer, "averageSpeed": .integer, "durationMs": .integer]),
            (.failed(fullJob, error: "x", reason: nil, timestamp: time), "flash_failed", ["error": .string]),
            (.paused(fullJob, timestamp: time), "flash_paused", [:]),
            (.resumed(fullJob, timestamp: time), "flash_resumed", [:]),
        ]
        for (event, type, fields) in events {
            #expect(event.isProtocolMessage)
            #expect(event.protocolType == type)
            let object = try check(event.protocolJSON(), type: type, fields: merged(jobFields, extraFields, fields))
            #expect(object["deviceName"] as? String == "Pixel 7")
            #expect(object["image"] as? String == "system.img")
            #expect(object["partition"] as? String == "system")
            // The protocol's fields keep their place; the extras come after them, before timestamp.
            let line = event.protocolJSON()!
            #expect(line.hasPrefix(#"{"type":"\#(type)","jobId":"job_3f9a1c2e","deviceId":"ABC123XYZ","#))
            #expect(line.hasSuffix(#","deviceName":"Pixel 7","image":"system.img","partition":"system","timestamp":1703001234567}"#))
        }
    }

    @Test func stringsAreEscaped() throws {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{07} del \u{7F} ünïcødé 🚀 \u{2028}"
        let job = JobInfo(jobId: "job_\"x\"", deviceId: "dev\\1", deviceName: "name\r\n")
        let line = try #require(FlashEvent.failed(job, error: nasty, reason: nil, timestamp: time).protocolJSON())
        #expect(!line.contains("\n"))
        #expect(!line.contains("\u{2028}"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["error"] as? String == nasty)
        #expect(object["jobId"] as? String == "job_\"x\"")
        #expect(object["deviceId"] as? String == "dev\\1")
        #expect(object["deviceName"] as? String == "name\r\n")
    }

    @Test func aggregatorOutputIsValidProtocol() throws {
        // Every event of a real aggregator run serialises to the protocol's shapes.
        let lines = LineLog()
        let aggregator = ProgressAggregator(job: fullJob, totalBytes: 1_000, rate: .unlimited, emit: { lines.append($0) })
        aggregator.start(stage: "Initializing")
        aggregator.update(bytesTransferred: 500)
        aggregator.deviceMessage("hello")
        aggregator.paused()
        aggregator.resumed()
        aggregator.update(bytesTransferred: 900)
        aggregator.completed()
        let types = lines.events.map(\.protocolType)
        #expect(types.first == "flash_started")
        #expect(types.suffix(2) == ["flash_progress", "flash_completed"])
        for event in lines.events {
            let line = try #require(event.protocolJSON())
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(object["jobId"] as? String == "job_3f9a1c2e")
            #expect(object["deviceId"] as? String == "ABC123XYZ")
            #expect(object["timestamp"] is NSNumber)
        }
    }
}

private final class LineLog: Sendable {
    private let storage = Mutex<[FlashEvent]>([])
    func append(_ event: FlashEvent) { storage.withLock { $0.append(event) } }
    var events: [FlashEvent] { storage.withLock { $0 } }
}
