import Foundation
import Testing
@testable import FlashEngine

/// `POST /api/flash/update`: a factory image zip from the image directory, as one job.
@Suite struct UpdateAPITests {
    /// A zip of android-info.txt and the images, made with zip(1) in the harness's image directory.
    private func factoryZip(_ harness: ServerHarness, name: String, board: String, images: [String: Data]) throws {
        let folder = harness.base + "/zip-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try "require board=\(board)\n".write(toFile: folder + "/android-info.txt", atomically: true, encoding: .utf8)
        for (partition, data) in images { try data.write(to: URL(fileURLWithPath: folder + "/\(partition).img")) }
        let zip = Process()
        zip.executableURL = URL(fileURLWithPath: "/usr/bin/zip")
        zip.arguments = ["-q", "-j", harness.images + "/" + name, folder + "/android-info.txt"] + images.keys.map { folder + "/\($0).img" }
        try zip.run()
        zip.waitUntilExit()
        #expect(zip.terminationStatus == 0)
    }

    @Test func aFactoryZipIsFlashedAsOneJobAndAnotherBoardsIsRefused() async throws {
        let harness = try await ServerHarness.start(devices: 2)
        defer { harness.removeFiles() }
        let boot = Data((0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let system = Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 13) })
        try factoryZip(harness, name: "image-emu.zip", board: "emulated fastboot device", images: ["boot": boot, "system": system])
        try factoryZip(harness, name: "image-raven.zip", board: "raven", images: ["boot": boot])
        let client = try await harness.connect()

        let answer = try await harness.http("POST", "/api/flash/update", body: ["deviceId": "EMU1", "image": "image-emu.zip", "skipReboot": true])
        #expect(answer.status == 200, "\(answer.text)")
        let jobId = try #require(answer.json["jobId"] as? String)
        try await client.waitForEnd(of: jobId)
        let messages = client.messages(job: jobId)
        #expect(messages.map { $0["type"] as? String ?? "" }.filter { $0 != "flash_progress" } == ["flash_started", "flash_completed"])
        #expect(messages.first?["partition"] as? String == "boot, system")
        #expect(messages.first?["image"] as? String == "image-emu.zip: boot.img, system.img")
        #expect(harness.partition("EMU1", "boot") == boot)
        #expect(harness.partition("EMU1", "system") == system)

        let refused = try await harness.http("POST", "/api/flash/update", body: ["deviceId": "EMU2", "image": "image-raven.zip"])
        let refusedId = try #require(refused.json["jobId"] as? String)
        try await client.waitForEnd(of: refusedId)
        let end = try #require(client.messages(job: refusedId).last)
        #expect(end["type"] as? String == "flash_failed")
        #expect((end["error"] as? String ?? "").contains("board is 'emulated fastboot device', this image is for board raven"))
        #expect(harness.partition("EMU2", "boot") == nil, "nothing was written")

        let badSlot = try await harness.http("POST", "/api/flash/update", body: ["deviceId": "EMU2", "image": "image-emu.zip", "slot": "c"])
        #expect(badSlot.status == 400)
        #expect((badSlot.json["error"] as? String ?? "").contains("no slot 'c'"))
        let badStartSlot = try await harness.http("POST", "/api/flash/start", body: ["deviceId": "EMU2", "image": "image-emu.zip", "slot": "z"])
        #expect(badStartSlot.status == 400)
        try "x".write(toFile: harness.images + "/plain.img", atomically: true, encoding: .utf8)
        let notAZip = try await harness.http("POST", "/api/flash/update", body: ["deviceId": "EMU2", "image": "plain.img"])
        #expect(notAZip.status == 422)
        await harness.stop()
    }

    @Test func theSlotOfAStartOrAnUpdateIsTheOneWritten() async throws {
        let harness = try await ServerHarness.start(devices: 1, slots: true)
        defer { harness.removeFiles() }
        let boot = Data((0..<50_000).map { UInt8(truncatingIfNeeded: $0 &* 3) })
        try boot.write(to: URL(fileURLWithPath: harness.images + "/boot.img"))
        try factoryZip(harness, name: "image-emu.zip", board: "emulated fastboot device", images: ["boot": boot])
        let client = try await harness.connect()
        let started = try await harness.http("POST", "/api/flash/start", body: ["deviceId": "EMU1", "image": "boot.img", "slot": "b"])
        try await client.waitForEnd(of: try #require(started.json["jobId"] as? String))
        #expect(harness.partition("EMU1", "boot_b") == boot)
        #expect(harness.partition("EMU1", "boot_a") == nil)
        let updated = try await harness.http("POST", "/api/flash/update", body: ["deviceId": "EMU1", "image": "image-emu.zip", "slot": "all"])
        try await client.waitForEnd(of: try #require(updated.json["jobId"] as? String))
        #expect(harness.partition("EMU1", "boot_a") == boot)
        await harness.stop()
    }
}
