import FlashEngine
import Foundation
import HTTPTypes
import Hummingbird

/// An error as docs/PROTOCOL.md wants it: `{"error": "..."}` with a fitting status.
struct APIError: HTTPResponseError {
    let status: HTTPResponse.Status
    let message: String

    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }

    /// The status an engine error deserves.
    init(_ error: FlashError) {
        let status: HTTPResponse.Status
        switch error.kind {
        case .unknownJob: status = .notFound
        case .deviceSelection: status = error.message.hasPrefix("no ") ? .notFound : .conflict
        case .jobState, .notConfirmed: status = .conflict
        case .image, .unsafeTarget: status = .unprocessableContent
        case .noPermission: status = .forbidden
        case .io: status = .internalServerError
        default: status = .badGateway
        }
        self.init(status, error.message)
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: ErrorMessage(error: message).json + "\n"))
        )
    }
}

/// Turns any error a route throws into an `APIError`.
func apiError(_ error: any Error) -> APIError {
    if let error = error as? APIError { return error }
    if let error = error as? FlashError { return APIError(error) }
    return APIError(.internalServerError, "\(error)")
}

/// `{"error": "..."}`.
struct ErrorMessage: Codable {
    var error: String

    var json: String {
        let data = (try? JSONOutput.encoder().encode(self)) ?? Data(#"{"error":"internal error"}"#.utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
