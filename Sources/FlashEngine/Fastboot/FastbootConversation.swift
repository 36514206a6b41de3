/// One fastboot exchange outside a flash job (`flashctl getvar`, `erase`, `reboot`, `set-active`,
/// `oem`, `flashing`, `boot`): finds the one device the selector names, connects, runs `body`
/// with a client, and closes. A cancel of `control` (Ctrl-C) ends any wait at once.
public enum FastbootConversation {
    public static func run<T>(
        device selector: DeviceSelector?, timeouts: FastbootTimeouts = FastbootTimeouts(), control: JobControl = JobControl(),
        finder: FastbootDeviceFinder = FastbootDeviceFinder(), onDeviceMessage: @escaping (String) -> Void = { _ in },
        _ body: (FastbootClient) throws -> T
    ) throws -> T {
        let found = try finder.find(selector)
        let transport = try finder.connect(found, control: control)
        defer { transport.close() }
        let handler = control.onCancel { transport.interrupt() }
        defer { control.removeCancelHandler(handler) }
        do {
            return try body(FastbootClient(transport: transport, timeouts: timeouts, onDeviceMessage: onDeviceMessage))
        } catch let error as FlashError where control.isCancelled {
            throw FlashError(.cancelled, "cancelled (\(error.message))")
        }
    }
}
