import CLibUSB

/// The process's libusb context. libusb contexts are thread-safe, so one is shared by all jobs;
/// each job thread drives event handling itself while it waits for its own transfers.
public final class USBContext: @unchecked Sendable {
    let raw: OpaquePointer

    public static let shared: Result<USBContext, FlashError> = {
        var ctx: OpaquePointer?
        let rc = libusb_init(&ctx)
        guard rc == 0, let ctx else {
            return .failure(FlashError(.io, "cannot initialise libusb: \(USBError.name(rc))"))
        }
        return .success(USBContext(raw: ctx))
    }()

    private init(raw: OpaquePointer) {
        self.raw = raw
    }
}

/// Turns libusb's negative return codes into names and engine errors.
enum USBError {
    static func name(_ code: Int32) -> String {
        String(cString: libusb_error_name(code))
    }

    static func flashError(_ code: Int32, during what: String, device: String) -> FlashError {
        switch code {
        case LIBUSB_ERROR_NO_DEVICE.rawValue:
            return FlashError(.disconnected, "USB connection lost (\(what)): device \(device) was unplugged")
        case LIBUSB_ERROR_TIMEOUT.rawValue:
            return FlashError(.timeout, "\(device) stopped responding during \(what) (USB timeout)")
        case LIBUSB_ERROR_ACCESS.rawValue:
            return FlashError(.noPermission, NoPermissionHint.message(for: device))
        case LIBUSB_ERROR_BUSY.rawValue:
            return FlashError(.deviceSelection, "\(device) is in use by another program (interface busy)")
        case LIBUSB_ERROR_PIPE.rawValue:
            return FlashError(.protocolViolation, "\(device) stalled its endpoint during \(what)")
        default:
            return FlashError(.io, "USB error during \(what) on \(device): \(name(code))")
        }
    }
}

/// What a user reads when the OS will not let us open a fastboot device.
public enum NoPermissionHint {
    public static func message(for device: String) -> String {
        "no permission to open \(device): install the udev rule that grants access to fastboot "
            + "interfaces (sudo install -m 644 udev/70-flashctl-fastboot.rules /etc/udev/rules.d/ && "
            + "sudo udevadm control --reload && sudo udevadm trigger), then unplug and replug the device"
    }
}
