extension FastbootClient {
    /// Erases `partition` in the slot(s) `slot` stands for, telling `erased` each name when done.
    public func erase(partition: String, slot: SlotChoice, erased: (String) -> Void = { _ in }) throws {
        for name in try slot.partitions(for: partition, client: self) {
            try erase(partition: name)
            erased(name)
        }
    }
}

/// Which A/B slot a partition command goes to, with AOSP fastboot's meaning: none given is the
/// device's current slot, `other` the one that is not, `all` both. A partition without slots
/// (`has-slot:NAME` is not `yes`) is used as it is named, whatever the choice.
public enum SlotChoice: Sendable, Equatable {
    case current
    case slot(String)
    case other
    case all

    /// `a`, `b`, `other` or `all`.
    public init(_ text: String) throws {
        switch text.lowercased() {
        case "a", "b": self = .slot(text.lowercased())
        case "_a", "_b": self = .slot(String(text.lowercased().dropFirst()))
        case "other": self = .other
        case "all": self = .all
        default: throw FlashError(.deviceSelection, "no slot '\(text)': say a, b, other or all")
        }
    }

    /// The partition names `partition` stands for on the device `client` talks to.
    public func partitions(for partition: String, client: FastbootClient) throws -> [String] {
        let hasSlot = (try? client.getvar("has-slot:\(partition)"))?.trimmingWhitespace == "yes"
        guard hasSlot else { return [partition] }
        switch self {
        case .slot(let slot): return [partition + "_" + slot]
        case .all: return [partition + "_a", partition + "_b"]
        case .current, .other:
            let current = String(try client.getvar("current-slot").trimmingWhitespace.filter { $0 != "_" })
            guard current == "a" || current == "b" else {
                throw FlashError(.protocolViolation, "\(client.transport.peerDescription) has slots but names its current one '\(current)'")
            }
            let slot = self == .current ? current : (current == "a" ? "b" : "a")
            return [partition + "_" + slot]
        }
    }
}
