/// One message from a fastboot device, as the protocol defines them.
enum FastbootResponse: Equatable {
    case okay(String)
    case fail(String)
    case info(String)
    case text(String)
    case data(UInt32)

    /// Parses one packet; the device is never trusted, so anything else is a protocol error.
    static func parse(_ packet: [UInt8], from device: String) throws -> FastbootResponse {
        guard packet.count >= 4 else {
            throw FlashError(.protocolViolation, "\(device) sent a malformed answer (\(packet.count) bytes)")
        }
        let tag = String(decoding: packet[0..<4], as: UTF8.self)
        let payload = String(decoding: packet[4...], as: UTF8.self)
        switch tag {
        case "OKAY": return .okay(payload)
        case "FAIL": return .fail(payload)
        case "INFO": return .info(payload)
        case "TEXT": return .text(payload)
        case "DATA":
            guard payload.count == 8, let size = UInt32(payload, radix: 16) else {
                throw FlashError(.protocolViolation, "\(device) sent a malformed DATA answer: \"DATA\(payload)\"")
            }
            return .data(size)
        default:
            let shown = String(decoding: packet.prefix(64).map { (32..<127).contains($0) ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
            throw FlashError(.protocolViolation, "\(device) sent an unknown answer: \"\(shown)\"")
        }
    }
}
