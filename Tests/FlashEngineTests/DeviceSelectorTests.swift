@testable import FlashEngine
import XCTest

final class DeviceSelectorTests: XCTestCase {
    func testEachSelectorForm() throws {
        XCTAssertEqual(try DeviceSelector.parse("ABC123XYZ"), .serial("ABC123XYZ"))
        XCTAssertEqual(try DeviceSelector.parse("serial:odd:serial"), .serial("odd:serial"))
        XCTAssertEqual(try DeviceSelector.parse("usb:1-1.2"), .usbPort("1-1.2"))
        XCTAssertEqual(try DeviceSelector.parse("18d1:4EE0"), .vidPid(0x18d1, 0x4ee0))
        XCTAssertEqual(try DeviceSelector.parse("tcp:127.0.0.1"), .tcp(host: "127.0.0.1", port: 5554))
        XCTAssertEqual(try DeviceSelector.parse("tcp:localhost:5556"), .tcp(host: "localhost", port: 5556))
    }

    func testBadSelectorsSayWhatIsExpected() {
        for text in ["", "usb:abc", "tcp:host:99999", "tcp:", "/dev/nonsense", "weird:thing"] {
            XCTAssertThrowsError(try DeviceSelector.parse(text), text) { error in
                XCTAssertEqual((error as! FlashError).kind, .deviceSelection, text)
            }
        }
    }

    func testMatching() {
        let device = FastbootDeviceInfo(address: .usb(bus: 1, portPath: "1-1.2"), serial: "S1", vendorID: 0x18d1, productID: 0x4ee0)
        XCTAssertTrue(DeviceSelector.serial("S1").matches(device))
        XCTAssertFalse(DeviceSelector.serial("S2").matches(device))
        XCTAssertTrue(DeviceSelector.usbPort("1-1.2").matches(device))
        XCTAssertFalse(DeviceSelector.usbPort("1-1").matches(device))
        XCTAssertTrue(DeviceSelector.vidPid(0x18d1, 0x4ee0).matches(device))
        XCTAssertFalse(DeviceSelector.tcp(host: "127.0.0.1", port: 5554).matches(device))
    }

    func testPartitionFromFileName() throws {
        XCTAssertEqual(try FastbootFlashRequest(imagePath: "/x/y/system.img").resolvedPartition(), "system")
        XCTAssertEqual(try FastbootFlashRequest(imagePath: "boot_a.img.zst").resolvedPartition(), "boot_a")
        XCTAssertEqual(try FastbootFlashRequest(imagePath: "a.img", partition: "vendor_boot").resolvedPartition(), "vendor_boot")
        XCTAssertThrowsError(try FastbootFlashRequest(imagePath: "a.img", partition: "../etc").resolvedPartition())
    }
}
