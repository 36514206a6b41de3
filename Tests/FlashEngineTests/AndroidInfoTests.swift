import Testing
@testable import FlashEngine

@Suite struct AndroidInfoTests {
    private let device: [String: String] = [
        "product": "oriole", "version-bootloader": "slider-1.2-9152140", "version-baseband": "g5123b-107485-230210-B-9600361",
        "has-slot:boot": "yes", "has-slot:userdata": "no",
    ]

    private func check(_ text: String) throws {
        try AndroidInfo(parsing: text).check(deviceName: "EMU1") { device[$0] }
    }

    @Test func aMatchingDevicePasses() throws {
        try check("""
            # factory image for oriole
            require board=raven|oriole
            require version-bootloader=slider-1.2-9152140
            require version-baseband=g5123b-*

            require partition-exists=boot
            require-for-product:raven version-bootloader=other-1.0
            reject version-bootloader=slider-0.*
            """)
    }

    @Test func aBoardMismatchNamesBothBoards() {
        #expect(throws: FlashError.self) { try check("require board=raven") }
        do {
            try check("require board=raven|bluejay")
        } catch let error as FlashError {
            #expect(error.message == "EMU1's board is 'oriole', this image is for board raven or bluejay")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func versionsRejectionsAndPartitionsAreChecked() {
        let cases: [(String, String)] = [
            ("require version-bootloader=slider-1.3-0", "EMU1's version-bootloader is 'slider-1.2-9152140', this image is for version-bootloader slider-1.3-0"),
            ("require version-baseband=g9999*", "EMU1's version-baseband is 'g5123b-107485-230210-B-9600361', this image is for version-baseband g9999*"),
            ("reject version-bootloader=slider-1.*", "EMU1's version-bootloader is 'slider-1.2-9152140', which this image refuses (slider-1.*)"),
            ("require partition-exists=vendor_dlkm", "EMU1 has no partition vendor_dlkm, which this image requires"),
            ("require secure=yes", "EMU1's secure is 'unknown', this image is for secure yes"),
        ]
        for (text, message) in cases {
            do {
                try check(text)
                Issue.record("'\(text)' passed")
            } catch let error as FlashError {
                #expect(error.message == message)
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }

    @Test func unreadableLinesAreRefused() {
        for text in ["require board", "want board=x", "require board=", "require-for-product: board=x", "require board=a||b"] {
            #expect(throws: FlashError.self, "\(text)") { _ = try AndroidInfo(parsing: text) }
        }
    }
}
