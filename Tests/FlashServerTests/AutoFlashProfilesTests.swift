import FlashEngine
@testable import FlashServer
import Foundation
import Testing

/// The auto-flash profiles file: the shipped example loads, and every mistake stops the server
/// with the file and line.
@Suite final class AutoFlashProfilesTests {
    private let directory: String
    private let images: ImageDirectory

    init() throws {
        directory = NSTemporaryDirectory() + "flashctl-profiles-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory + "/images", withIntermediateDirectories: true)
        for name in ["boot.img", "system.img.zst", "raspios-lite.img.xz"] {
            _ = FileManager.default.createFile(atPath: directory + "/images/" + name, contents: Data(repeating: 1, count: 4096))
        }
        images = try ImageDirectory(path: directory + "/images")
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func load(_ text: String) throws -> AutoFlashProfiles {
        let path = directory + "/profiles.yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return try AutoFlashProfiles.load(path: path, resolveImage: images.resolve)
    }

    private func failure(_ text: String) -> String {
        do {
            _ = try load(text)
            return "loaded"
        } catch {
            return "\(error)"
        }
    }

    @Test func theShippedExampleLoads() throws {
        let example = try String(contentsOfFile: ProcessRunnerPaths.packageRoot + "/udev/profiles.example.yaml", encoding: .utf8)
        let profiles = try load(example)
        let pixel = try #require(profiles.profiles["pixel-factory"])
        #expect(pixel.erase == ["userdata", "metadata"])
        #expect(pixel.flash.map(\.partition) == ["boot", "system"])
        #expect(pixel.flash.map { ($0.imagePath as NSString).lastPathComponent } == ["boot.img", "system.img.zst"])
        #expect(pixel.reboot)
        #expect(pixel.oncePerSerial)
        #expect(pixel.target == .fastboot)
        let cards = try #require(profiles.profiles["sd-cards"])
        #expect(cards.target == .disk)
        #expect(cards.disk.map { ($0.imagePath as NSString).lastPathComponent } == "raspios-lite.img.xz")
        #expect(cards.disk?.verify == true)
        #expect(cards.disk?.oncePerMedium == true)
    }

    @Test func aDiskProfileTakesOnlyItsOwnKeysAndDefaultsToVerifyingOnce() throws {
        let plain = try load("profiles:\n  cards:\n    target: disk\n    image: boot.img\n")
        #expect(plain.profiles["cards"]?.disk?.verify == true)
        #expect(plain.profiles["cards"]?.disk?.oncePerMedium == true)
        let every = try load("profiles:\n  cards:\n    target: disk\n    image: boot.img\n    verify: false\n    once-per-medium: false\n")
        #expect(every.profiles["cards"]?.disk == .init(imagePath: images.path + "/boot.img", verify: false, oncePerMedium: false))
        #expect(failure("profiles:\n  cards:\n    target: disk\n    image: boot.img\n    flash: []\n").contains("line 5: profile 'cards' (target: disk) has an unknown key 'flash'"))
        #expect(failure("profiles:\n  cards:\n    target: disk\n").contains("profile 'cards' (target: disk) has no 'image'"))
        #expect(failure("profiles:\n  cards:\n    target: floppy\n    image: boot.img\n").contains("line 3: profile 'cards': target must be fastboot or disk, not 'floppy'"))
    }

    @Test func mistakesNameTheLine() {
        let missing = failure("""
            profiles:
              bench:
                flash:
                  - partition: boot
                    image: nowhere.img
            """)
        #expect(missing.contains("profiles.yaml line 5"), "\(missing)")
        #expect(missing.contains("nowhere.img"), "\(missing)")

        let unknown = failure("""
            profiles:
              bench:
                flash:
                  - image: boot.img
                wipe: [userdata]
            """)
        #expect(unknown.contains("line 5") && unknown.contains("unknown key 'wipe'"), "\(unknown)")

        let badPartition = failure("""
            profiles:
              bench:
                erase: ["user data"]
                flash:
                  - image: boot.img
            """)
        #expect(badPartition.contains("line 3") && badPartition.contains("not a partition name"), "\(badPartition)")

        let noFlash = failure("""
            profiles:
              bench:
                reboot: yes please
            """)
        #expect(noFlash.contains("line 3") && noFlash.contains("unknown key") == false, "\(noFlash)")

        let outside = failure("""
            profiles:
              bench:
                flash:
                  - image: ../secrets.img
            """)
        #expect(outside.contains("line 4"), "\(outside)")

        let notAFactoryZip = failure("""
            profiles:
              factory:
                update: boot.img
                slot: b
            """)
        #expect(notAFactoryZip.contains("line 3") && notAFactoryZip.contains("update 'boot.img'"), "\(notAFactoryZip)")
        let updateAndFlash = failure("""
            profiles:
              factory:
                update: boot.img
                flash:
                  - image: boot.img
            """)
        #expect(updateAndFlash.contains("unknown key 'flash'"), "\(updateAndFlash)")

        let notYAML = failure("profiles: [unclosed")
        #expect(notYAML.contains("not valid YAML"), "\(notYAML)")
        #expect(failure("").contains("empty"))
    }
}

enum ProcessRunnerPaths {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
}
