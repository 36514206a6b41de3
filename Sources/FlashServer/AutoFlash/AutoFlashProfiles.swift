import FlashEngine
import Foundation
import Yams

/// What to do with a device that udev gave `FLASHCTL_PROFILE=NAME`. For a fastboot device: erase
/// steps, images per partition (or a factory image zip, as `flashctl update`), a reboot at the
/// end, and whether a serial is flashed only once.
/// For a disk (`target: disk`): the image, whether to read it back, and whether one medium is
/// written only once.
public struct AutoFlashProfile: Sendable, Equatable {
    public struct FlashStep: Sendable, Equatable {
        public var partition: String
        /// The image's path inside the image directory.
        public var imagePath: String
    }

    /// A factory image zip flashed as `flashctl update` flashes it.
    public struct FactoryUpdate: Sendable, Equatable {
        public var image: FactoryImage
        public var slot: SlotChoice?
        public var wipe: Bool
    }

    public struct DiskWrite: Sendable, Equatable {
        /// The image's path inside the image directory.
        public var imagePath: String
        public var verify: Bool
        /// A medium (serial and size) once written is not written again when inserted again.
        public var oncePerMedium: Bool
    }

    public var name: String
    public var target: JobTarget = .fastboot
    public var erase: [String] = []
    public var flash: [FlashStep] = []
    public var reboot: Bool = false
    public var oncePerSerial: Bool = false
    /// Set for `target: disk`.
    public var disk: DiskWrite? = nil
    /// Set for a fastboot profile that names a factory zip (`update:`) instead of `flash:` steps.
    public var update: FactoryUpdate? = nil
}

/// The profiles file (YAML), checked completely at start: an error names the file and line, and
/// a profile naming an image that is not in the image directory is an error, never a silent skip.
public struct AutoFlashProfiles: Sendable {
    public let path: String
    public let profiles: [String: AutoFlashProfile]

    public init(path: String, profiles: [String: AutoFlashProfile]) {
        self.path = path
        self.profiles = profiles
    }

    /// `resolveImage` turns a name from the file into a path inside the image directory (or
    /// throws why it cannot).
    public static func load(path: String, resolveImage: @escaping (String) throws -> String) throws -> AutoFlashProfiles {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw FlashError(.image, "cannot read the auto-flash profiles file \(path)")
        }
        let parser = ProfileFileParser(path: path, resolveImage: resolveImage)
        return AutoFlashProfiles(path: path, profiles: try parser.parse(text))
    }
}

/// Reads the YAML node by node, so every error can say where it is.
private struct ProfileFileParser {
    let path: String
    let resolveImage: (String) throws -> String

    func parse(_ text: String) throws -> [String: AutoFlashProfile] {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else { throw error(nil, "the file is empty; it needs a 'profiles:' mapping") }
            root = node
        } catch let yaml as YamlError {
            throw FlashError(.image, "\(path): not valid YAML: \(yaml)")
        }
        let top = try mapping(root, "the file")
        try allowOnly(["profiles"], in: top, of: "the file")
        guard let profilesNode = top["profiles"] else { throw error(root, "no 'profiles:' mapping") }
        let entries = try mapping(profilesNode, "'profiles'")
        guard !entries.isEmpty else { throw error(profilesNode, "'profiles' is empty") }
        var profiles: [String: AutoFlashProfile] = [:]
        for (key, value) in entries {
            let name = try scalar(key, "a profile name")
            profiles[name] = try profile(name, value)
        }
        return profiles
    }

    private func profile(_ name: String, _ node: Node) throws -> AutoFlashProfile {
        let what = "profile '\(name)'"
        let fields = try mapping(node, what)
        let target = try fields["target"].map { node -> JobTarget in
            let text = try scalar(node, "a target")
            guard let target = JobTarget(rawValue: text) else { throw error(node, "\(what): target must be fastboot or disk, not '\(text)'") }
            return target
        } ?? .fastboot
        if target == .disk { return try diskProfile(name, node, fields) }
        if fields["update"] != nil { return try updateProfile(name, node, fields) }
        try allowOnly(["target", "erase", "flash", "reboot", "once-per-serial"], in: fields, of: what)
        let erase = try (fields["erase"].map { try sequence($0, "\(what): 'erase'") } ?? []).map { node in
            try partition(node, "\(what): an 'erase' entry")
        }
        guard let flashNode = fields["flash"] else { throw error(node, "\(what) has no 'flash:' list") }
        let stepNodes = try sequence(flashNode, "\(what): 'flash'")
        guard !stepNodes.isEmpty else { throw error(flashNode, "\(what): 'flash' is empty") }
        let steps = try stepNodes.map { step in
            let entry = try mapping(step, "\(what): a 'flash' entry")
            try allowOnly(["partition", "image"], in: entry, of: "\(what): a 'flash' entry")
            guard let imageNode = entry["image"] else { throw error(step, "\(what): a 'flash' entry has no 'image'") }
            let image = try scalar(imageNode, "an image name")
            let partitionName: String
            if let partitionNode = entry["partition"] {
                partitionName = try partition(partitionNode, "\(what): 'partition'")
            } else {
                do {
                    partitionName = try FastbootFlashRequest(imagePath: image).resolvedPartition()
                } catch let flash as FlashError {
                    throw error(imageNode, "\(what): \(flash.message)")
                }
            }
            let resolved: String
            do {
                resolved = try resolveImage(image)
            } catch let flash as FlashError {
                throw error(imageNode, "\(what): image '\(image)': \(flash.message)")
            }
            return AutoFlashProfile.FlashStep(partition: partitionName, imagePath: resolved)
        }
        return AutoFlashProfile(
            name: name, target: .fastboot, erase: erase, flash: steps,
            reboot: try fields["reboot"].map { try bool($0, "\(what): 'reboot'") } ?? false,
            oncePerSerial: try fields["once-per-serial"].map { try bool($0, "\(what): 'once-per-serial'") } ?? false)
    }

    /// `update: image-oriole.zip`, with `slot`, `wipe`, `reboot` (true unless said) and `once-per-serial`.
    private func updateProfile(_ name: String, _ node: Node, _ fields: [(Node, Node)]) throws -> AutoFlashProfile {
        let what = "profile '\(name)'"
        try allowOnly(["target", "update", "slot", "wipe", "reboot", "once-per-serial"], in: fields, of: "\(what) (update:)")
        guard let imageNode = fields["update"] else { throw error(node, "\(what) has no 'update'") }
        let zip = try scalar(imageNode, "a factory image zip")
        let image: FactoryImage
        do {
            image = try FactoryImage.open(path: try resolveImage(zip))
        } catch let flash as FlashError {
            throw error(imageNode, "\(what): update '\(zip)': \(flash.message)")
        }
        let slot = try fields["slot"].map { node -> SlotChoice in
            do {
                return try SlotChoice(try scalar(node, "a slot"))
            } catch let flash as FlashError {
                throw error(node, "\(what): \(flash.message)")
            }
        }
        return AutoFlashProfile(
            name: name, target: .fastboot,
            reboot: try fields["reboot"].map { try bool($0, "\(what): 'reboot'") } ?? true,
            oncePerSerial: try fields["once-per-serial"].map { try bool($0, "\(what): 'once-per-serial'") } ?? false,
            update: .init(image: image, slot: slot, wipe: try fields["wipe"].map { try bool($0, "\(what): 'wipe'") } ?? false))
    }

    private func diskProfile(_ name: String, _ node: Node, _ fields: [(Node, Node)]) throws -> AutoFlashProfile {
        let what = "profile '\(name)'"
        try allowOnly(["target", "image", "verify", "once-per-medium"], in: fields, of: "\(what) (target: disk)")
        guard let imageNode = fields["image"] else { throw error(node, "\(what) (target: disk) has no 'image'") }
        let image = try scalar(imageNode, "an image name")
        let resolved: String
        do {
            resolved = try resolveImage(image)
        } catch let flash as FlashError {
            throw error(imageNode, "\(what): image '\(image)': \(flash.message)")
        }
        return AutoFlashProfile(
            name: name, target: .disk,
            disk: .init(
                imagePath: resolved,
                verify: try fields["verify"].map { try bool($0, "\(what): 'verify'") } ?? true,
                oncePerMedium: try fields["once-per-medium"].map { try bool($0, "\(what): 'once-per-medium'") } ?? true))
    }

    // MARK: nodes

    private func mapping(_ node: Node, _ what: String) throws -> [(Node, Node)] {
        guard case .mapping(let mapping) = node else { throw error(node, "\(what) must be a mapping (key: value lines)") }
        return Array(mapping)
    }

    private func sequence(_ node: Node, _ what: String) throws -> [Node] {
        guard case .sequence(let sequence) = node else { throw error(node, "\(what) must be a list") }
        return Array(sequence)
    }

    private func scalar(_ node: Node, _ what: String) throws -> String {
        guard case .scalar(let scalar) = node, !scalar.string.isEmpty else { throw error(node, "expected \(what)") }
        return scalar.string
    }

    private func bool(_ node: Node, _ what: String) throws -> Bool {
        guard let value = node.bool else { throw error(node, "\(what) must be true or false") }
        return value
    }

    private func partition(_ node: Node, _ what: String) throws -> String {
        let name = try scalar(node, "a partition name")
        do {
            return try FastbootFlashRequest(imagePath: "", partition: name).resolvedPartition()
        } catch let flash as FlashError {
            throw error(node, "\(what): \(flash.message)")
        }
    }

    private func allowOnly(_ keys: Set<String>, in fields: [(Node, Node)], of what: String) throws {
        for (key, _) in fields where !keys.contains(key.string ?? "") {
            throw error(key, "\(what) has an unknown key '\(key.string ?? "?")' (known: \(keys.sorted().joined(separator: ", ")))")
        }
    }

    private func error(_ node: Node?, _ message: String) -> FlashError {
        if let mark = node?.mark {
            return FlashError(.image, "\(path) line \(mark.line): \(message)")
        }
        return FlashError(.image, "\(path): \(message)")
    }
}

private extension Array where Element == (Node, Node) {
    subscript(key: String) -> Node? {
        first { $0.0.string == key }?.1
    }
}
