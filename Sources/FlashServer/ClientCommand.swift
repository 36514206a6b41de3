import Foundation

/// A message a WebSocket client sends (docs/PROTOCOL.md, "Client to server").
enum ClientCommand: Equatable {
    case ping
    case pause(jobId: String)
    case resume(jobId: String)
    case cancel(jobId: String)

    struct ParseError: Error {
        var message: String
        var type: String?
        var jobId: String?
    }

    var name: String {
        switch self {
        case .ping: return "ping"
        case .pause: return "pause"
        case .resume: return "resume"
        case .cancel: return "cancel"
        }
    }

    init(json text: String) throws {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw ParseError(message: "not a JSON object; commands look like {\"type\":\"pause\",\"jobId\":\"job_...\"}")
        }
        guard let type = object["type"] as? String else {
            throw ParseError(message: "the command has no \"type\"")
        }
        let jobId = object["jobId"] as? String
        switch type {
        case "ping":
            self = .ping
            return
        case "pause", "resume", "cancel":
            guard let jobId, !jobId.isEmpty else {
                throw ParseError(message: "\(type) needs a \"jobId\"", type: type)
            }
            switch type {
            case "pause": self = .pause(jobId: jobId)
            case "resume": self = .resume(jobId: jobId)
            default: self = .cancel(jobId: jobId)
            }
        default:
            throw ParseError(message: "unknown command type '\(type)'; known: ping, pause, resume, cancel", type: type, jobId: jobId)
        }
    }
}
