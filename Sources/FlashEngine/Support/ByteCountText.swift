/// Byte counts as people read them, for messages from the engine and for the CLI.
public enum ByteCountText {
    /// `512 B`, `12.5 KiB`, `1.8 GiB`, `3.6 TiB`.
    public static func binary(_ count: Int64) -> String {
        scaled(Double(max(0, count)), base: 1024, units: ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"], suffix: "")
    }

    /// One decimal in the largest unit that keeps the value under `base`.
    public static func scaled(_ value: Double, base: Double, units: [String], suffix: String) -> String {
        if value < base { return "\(Int64(value)) \(units[0])\(suffix)" }
        var scaled = value
        var index = 0
        // Move up a unit also when one decimal would round to `1024.0`.
        while index < units.count - 1, (scaled * 10).rounded() / 10 >= base {
            scaled /= base
            index += 1
        }
        let tenths = Int64((scaled * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[index])\(suffix)"
    }
}
