import Foundation
import GRDB

/// A job state the farm's database has not taken yet (it was unreachable): kept in the station's
/// SQLite, newest state per job, and written to PostgreSQL when it is back.
struct FarmOutboxItem: Codable, Sendable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "farm_outbox"

    var jobId: String
    var deviceId: String
    var state: String
    var error: String?
    var finished: Bool
    /// The job's `HistoryEntry` as JSON.
    var entry: String?
}

extension HistoryStore {
    func keepForFarm(_ item: FarmOutboxItem) throws {
        try database.write { try item.upsert($0) }
    }

    /// Oldest first.
    func farmOutbox() throws -> [FarmOutboxItem] {
        try database.read { try FarmOutboxItem.order(Column("rowid")).fetchAll($0) }
    }

    func removeFromFarmOutbox(jobId: String) throws {
        _ = try database.write { try FarmOutboxItem.deleteOne($0, key: jobId) }
    }
}
