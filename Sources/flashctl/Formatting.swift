import FlashEngine
import Foundation

/// Human formats for the terminal, in the units the dashboard shows: sizes and speeds in binary
/// units (KiB, MiB, GiB: the units size options take), durations like `1m 50s`.
enum HumanFormat {
    /// `512 B`, `12.5 KiB`, `1.8 GiB`, `3.6 TiB`.
    static func bytes(_ count: Int64) -> String {
        ByteCountText.binary(count)
    }

    /// `512 B/s`, `12.3 KiB/s`, `21.3 MiB/s`, `1.2 GiB/s`.
    static func speed(_ bytesPerSecond: Int64) -> String {
        ByteCountText.binary(bytesPerSecond) + "/s"
    }

    /// `45s`, `1m 50s`, `2h 3m` (whole seconds, rounded up by the caller if it wants).
    static func duration(seconds: Int64) -> String {
        let s = max(0, seconds)
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m \(s % 60)s" }
        return "\(s / 3600)h \((s % 3600) / 60)m"
    }

    /// Like `duration(seconds:)`, with tenths under 10 s (`3.2s`): short jobs are common here.
    static func duration(milliseconds: Int64) -> String {
        let ms = max(0, milliseconds)
        if ms < 10_000 {
            let tenths = (ms + 50) / 100
            return tenths < 100 ? "\(tenths / 10).\(tenths % 10)s" : "10s"
        }
        return duration(seconds: (ms + 500) / 1000)
    }

    /// A percentage with one decimal: `45.5%`.
    /// "2026-11-23 14:05:09" in local time.
    static func timestamp(_ epochMillis: Int64) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.string(from: Date(timeIntervalSince1970: Double(epochMillis) / 1000))
    }

    static func percent(_ value: Double) -> String {
        let tenths = value.isFinite ? Int64((min(max(value, 0), 100) * 10).rounded()) : 0
        return "\(tenths / 10).\(tenths % 10)%"
    }
}
