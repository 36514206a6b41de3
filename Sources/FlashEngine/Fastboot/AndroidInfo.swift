/// `android-info.txt` of a factory image: what the device must be before anything is flashed,
/// checked as AOSP fastboot checks it.
///
/// Lines: `require NAME=V1|V2...`, `require-for-product:PRODUCT NAME=...` (only for that product),
/// `reject NAME=...` (must match none). NAME `board` is the device's `product` variable;
/// `partition-exists=P` needs `has-slot:P` to answer yes or no. A value ending in `*` matches by
/// prefix. Blank lines and `#` comments are skipped; anything else is refused as unreadable.
public struct AndroidInfo: Sendable, Equatable {
    public struct Requirement: Sendable, Equatable {
        /// The device variable (`product` for `board`).
        public var variable: String
        /// As written in the file (`board`), for messages.
        public var name: String
        public var values: [String]
        public var reject: Bool
        /// Applies only to this product.
        public var product: String?
    }

    public var requirements: [Requirement]

    public init(parsing text: String) throws {
        requirements = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw).trimmingWhitespace
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts = line.split(separator: " ", maxSplits: 1).map { String($0).trimmingWhitespace }
            guard parts.count == 2, let equals = parts[1].firstIndex(of: "=") else {
                throw FlashError(.image, "android-info.txt line \(index + 1) is not 'require NAME=VALUE': \(line)")
            }
            var product: String?
            let reject: Bool
            switch parts[0] {
            case "require": reject = false
            case "reject": reject = true
            default:
                guard let name = parts[0].dropPrefix("require-for-product:"), !name.isEmpty else {
                    throw FlashError(.image, "android-info.txt line \(index + 1) starts with '\(parts[0])', not require or reject")
                }
                product = name
                reject = false
            }
            let name = String(parts[1][..<equals]).trimmingWhitespace
            let values = parts[1][parts[1].index(after: equals)...].split(separator: "|", omittingEmptySubsequences: false).map { String($0).trimmingWhitespace }
            guard !name.isEmpty, !values.isEmpty, values.allSatisfy({ !$0.isEmpty }) else {
                throw FlashError(.image, "android-info.txt line \(index + 1) names no value: \(line)")
            }
            requirements.append(Requirement(variable: name == "board" ? "product" : name, name: name, values: values, reject: reject, product: product))
        }
    }

    /// Refuses a device that does not meet every requirement, naming what it is and what the
    /// image needs. `getvar` asks the device (nil: it does not know the variable).
    public func check(deviceName: String, getvar: (String) throws -> String?) throws {
        let product = try getvar("product")
        for requirement in requirements {
            if let only = requirement.product, only != product { continue }
            if requirement.variable == "partition-exists" {
                for partition in requirement.values {
                    let answer = try getvar("has-slot:\(partition)")
                    guard answer == "yes" || answer == "no" else {
                        throw FlashError(.deviceSelection, "\(deviceName) has no partition \(partition), which this image requires")
                    }
                }
                continue
            }
            let value = requirement.variable == "product" ? product : try getvar(requirement.variable)
            let matches = value.map { value in requirement.values.contains { Self.matches(value, $0) } } ?? false
            if matches == requirement.reject {
                let wanted = requirement.values.joined(separator: " or ")
                throw FlashError(.deviceSelection, requirement.reject
                    ? "\(deviceName)'s \(requirement.name) is '\(value ?? "")', which this image refuses (\(wanted))"
                    : "\(deviceName)'s \(requirement.name) is '\(value ?? "unknown")', this image is for \(requirement.name) \(wanted)")
            }
        }
    }

    /// `value` against `pattern`, a trailing `*` matching any rest; case-insensitive, as fastboot.
    static func matches(_ value: String, _ pattern: String) -> Bool {
        let value = value.lowercased(), pattern = pattern.lowercased()
        if pattern.hasSuffix("*") { return value.hasPrefix(String(pattern.dropLast())) }
        return value == pattern
    }
}
