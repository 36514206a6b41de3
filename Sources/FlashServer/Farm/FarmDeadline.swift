import Logging
import PostgresNIO
import FlashEngine

/// The farm's database calls end in time: PostgresNIO's pool waits for a connection for as long
/// as it takes, and a station must not hang on a database that went away.
enum FarmDeadline {
    static let seconds = 3

    static func run<T: Sendable>(_ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await operation() }
            group.addTask {
                try await Task.sleep(for: .seconds(seconds))
                throw FlashError(.timeout, "no answer within \(seconds) s")
            }
            defer { group.cancelAll() }
            guard let first = try await group.next() else { throw CancellationError() }
            return first
        }
    }
}


extension PostgresClient {
    /// `query`, within the farm's deadline.
    @discardableResult
    func farmQuery(_ query: PostgresQuery, logger: Logger) async throws -> PostgresRowSequence {
        try await FarmDeadline.run { try await self.query(query, logger: logger) }
    }
}
