/// The wire form of events: exactly the messages of docs/PROTOCOL.md, one JSON object per line.
///
/// Field order is fixed for people reading logs: `type`, `jobId`, `deviceId`, the message's own
/// fields in docs/PROTOCOL.md's order, the optional extras (`deviceName`, `image`, `partition`, present
/// only when known), then `timestamp`.
///
/// - `timestamp`, byte counts, `transferSpeed` (bytes/s) and `estimatedTimeRemaining` (seconds)
///   are JSON integers; `progress` is a number with at most one decimal (`45.5`, `100`).
/// - An unknown ETA is sent as `0`, never omitted or `null`: a JavaScript client formatting it as
///   `1m 50s` would show `NaNm NaNs` for a missing field, a client that merges each message into
///   the job's previous state (`{...job, ...msg}`) would keep showing a stale ETA if the field were
///   left out, and `0` is falsy, so `eta ? format(eta) : "—"` shows "unknown". It also keeps the
///   field's type a plain `number`.
/// - Disk jobs add `"target":"disk"` (and `batchId` for jobs fed by one read); their
///   `flash_completed` adds `verified` and `sha256` (disks) or `xxh128` (fastboot). In a farm every message adds `station`.
/// - `.deviceMessage` becomes `{"type":"device_message","jobId":…,"deviceId":…,"text":…,…}`. It is
///   NOT part of the protocol (see `isProtocolMessage`): it is for our CLI's NDJSON output; the
///   server must not send it to WebSocket clients that did not ask for it, since existing
///   dashboards log every unknown type as a warning. `.queued` becomes
///   `{"type":"flash_queued","jobId":…,"deviceId":…,…}` on the same terms (`?include=flash_queued`).
extension FlashEvent {
    /// The message's `type`: "flash_started", "flash_progress", ... or "device_message".
    public var protocolType: String {
        switch self {
        case .queued: return "flash_queued"
        case .started: return "flash_started"
        case .progress: return "flash_progress"
        case .completed: return "flash_completed"
        case .failed: return "flash_failed"
        case .paused: return "flash_paused"
        case .resumed: return "flash_resumed"
        case .deviceMessage: return "device_message"
        }
    }

    /// False for `.deviceMessage` and `.queued`, which clients of docs/PROTOCOL.md do not know.
    public var isProtocolMessage: Bool {
        switch self {
        case .deviceMessage, .queued: return false
        default: return true
        }
    }

    /// The message as one line of JSON (no trailing newline). Every event has a JSON form today, so
    /// this is never nil; the Optional leaves room for events that have none.
    public func protocolJSON() -> String? {
        var json = JSONLine(type: protocolType)
        let job = self.job
        json.add("jobId", string: job.jobId)
        json.add("deviceId", string: job.deviceId)
        let timestamp: Int64
        switch self {
        case .queued(_, let time):
            timestamp = time
        case .started(_, let stage, let totalBytes, let time):
            json.add("stage", string: stage)
            json.add("totalBytes", int: totalBytes)
            timestamp = time
        case .progress(_, let snapshot, let time):
            json.add("progress", raw: Self.formatPercent(snapshot.progress))
            json.add("stage", string: snapshot.stage)
            json.add("bytesTransferred", int: snapshot.bytesTransferred)
            json.add("totalBytes", int: snapshot.totalBytes)
            json.add("transferSpeed", int: snapshot.transferSpeed)
            json.add("estimatedTimeRemaining", int: snapshot.estimatedTimeRemaining ?? 0)
            timestamp = time
        case .completed(_, let summary, let time):
            json.add("totalBytes", int: summary.bytes)
            json.add("averageSpeed", int: summary.averageSpeed)
            json.add("durationMs", int: summary.durationMs)
            if let verified = summary.verified { json.add("verified", raw: verified ? "true" : "false") }
            if let sha256 = summary.sha256 { json.add("sha256", string: sha256) }
            if let xxh128 = summary.xxh128 { json.add("xxh128", string: xxh128) }
            timestamp = time
        case .failed(_, let error, let reason, let time):
            json.add("error", string: error)
            if let reason { json.add("reason", string: reason) }
            timestamp = time
        case .paused(_, let time), .resumed(_, let time):
            timestamp = time
        case .deviceMessage(_, let text, let time):
            json.add("text", string: text)
            timestamp = time
        }
        if let deviceName = job.deviceName { json.add("deviceName", string: deviceName) }
        if let image = job.image { json.add("image", string: image) }
        if let partition = job.partition { json.add("partition", string: partition) }
        // Fastboot messages stay exactly docs/PROTOCOL.md's; disk jobs say what they are.
        if job.target != .fastboot { json.add("target", string: job.target.rawValue) }
        if let batchId = job.batchId { json.add("batchId", string: batchId) }
        if let station = job.station { json.add("station", string: station) }
        json.add("timestamp", int: timestamp)
        return json.finish()
    }

    /// `{"type":"pong","timestamp":…}`, the answer to a client's ping.
    public static func pongJSON(timestamp: Int64) -> String {
        var json = JSONLine(type: "pong")
        json.add("timestamp", int: timestamp)
        return json.finish()
    }

    /// A percentage as a JSON number with at most one decimal, clamped to 0...100.
    static func formatPercent(_ value: Double) -> String {
        guard value.isFinite else { return "0" }
        let tenths = Int64((min(max(value, 0), 100) * 10).rounded())
        return tenths % 10 == 0 ? "\(tenths / 10)" : "\(tenths / 10).\(tenths % 10)"
    }
}

/// A one-line JSON object written field by field, in order.
private struct JSONLine {
    private var text: String

    init(type: String) {
        text = "{\"type\":"
        JSONLine.appendString(type, to: &text)
    }

    mutating func add(_ key: String, string value: String) {
        appendKey(key)
        JSONLine.appendString(value, to: &text)
    }

    mutating func add(_ key: String, int value: Int64) {
        appendKey(key)
        text += String(value)
    }

    mutating func add(_ key: String, raw value: String) {
        appendKey(key)
        text += value
    }

    func finish() -> String { text + "}" }

    private mutating func appendKey(_ key: String) {
        text += ","
        JSONLine.appendString(key, to: &text)
        text += ":"
    }

    private static let hex: [Character] = Array("0123456789abcdef")

    /// RFC 8259 string escaping; U+2028/U+2029 are escaped too so the line is also valid JavaScript.
    static func appendString(_ value: String, to text: inout String) {
        text += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case "\u{08}": text += "\\b"
            case "\u{0C}": text += "\\f"
            case "\u{2028}": text += "\\u2028"
            case "\u{2029}": text += "\\u2029"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    text += "\\u00"
                    text.append(hex[Int(scalar.value >> 4)])
                    text.append(hex[Int(scalar.value & 0xF)])
                } else {
                    text.unicodeScalars.append(scalar)
                }
            }
        }
        text += "\""
    }
}
