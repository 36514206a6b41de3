/// How many `.progress` messages a job may send: at most `perSecond` in any sliding second, the
/// final 100% included (docs/PROTOCOL.md).
///
/// The final message cannot wait (the job has ended) and cannot be foreseen, so regular messages
/// keep room for it: at most `perSecond - 1` of them in any second (`regularPerSecond`), spaced
/// evenly, `spacing` apart. Below 2 per second there is no such room; regular messages then come
/// `1 / perSecond` apart and the final one may follow one sooner.
public struct ProgressRate: Sendable, Equatable {
    /// The most messages in any sliding second; 0 for no limit.
    public let perSecond: Double

    public static let standard = ProgressRate(perSecond: 4)
    public static let unlimited = ProgressRate(perSecond: 0)

    /// The sliding second is checked a little wider, so that timestamps rounded to milliseconds
    /// never show one message too many.
    static let windowNanos: UInt64 = 1_010_000_000

    public init(perSecond: Double) {
        self.perSecond = perSecond.isFinite && perSecond > 0 ? perSecond : 0
    }

    public var isLimited: Bool { perSecond > 0 }

    /// Regular messages allowed in any sliding second.
    public var regularPerSecond: Int {
        guard isLimited else { return Int.max }
        return max(1, Int(perSecond.rounded(.down)) - 1)
    }

    /// Seconds between two regular messages (and between a scheduler's ticks).
    public var spacing: Double {
        guard isLimited else { return 0 }
        if perSecond < 2 { return 1 / perSecond }
        return 1.02 / Double(regularPerSecond)
    }
}
