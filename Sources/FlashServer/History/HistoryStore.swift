import FlashEngine
import Foundation
import GRDB

/// Every job the server ran, in SQLite, so it outlives the process.
public final class HistoryStore: Sendable {
    public let path: String
    let database: DatabaseQueue

    /// Opens (creating if needed) the history at `path`.
    public init(path: String) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        do {
            if !directory.isEmpty {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            database = try DatabaseQueue(path: path)
            try Self.migrator.migrate(database)
        } catch {
            throw FlashError(.io, "cannot open the job history at \(path): \((error as NSError).localizedDescription)")
        }
    }

    /// `$XDG_STATE_HOME/flashctl/history.sqlite` (`~/.local/state/...`); /var/lib/flashctl for root
    /// without a home.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let state = environment["XDG_STATE_HOME"], !state.isEmpty {
            return state + "/flashctl/history.sqlite"
        }
        if let home = environment["HOME"], !home.isEmpty, home != "/" {
            return home + "/.local/state/flashctl/history.sqlite"
        }
        return "/var/lib/flashctl/history.sqlite"
    }

    /// Inserts or updates the job's row.
    public func record(_ status: JobStatus) throws {
        let entry = HistoryEntry(status)
        try database.write { try entry.upsert($0) }
    }

    /// Marks every job left unfinished by a server that stopped without ending it; returns how
    /// many. Run once at start, before any job.
    @discardableResult
    public func markUnfinishedAsInterrupted(now: Int64) throws -> Int {
        try database.write { db in
            try db.execute(
                sql: """
                    UPDATE job SET result = ?, endedAt = ?,
                        error = COALESCE(error, 'the server stopped while this job was ' || result)
                    WHERE result IN ('queued', 'running', 'paused')
                    """,
                arguments: [JobState.interrupted.rawValue, now])
            return db.changesCount
        }
    }

    /// Newest first; optionally one device's jobs only.
    public func recent(limit: Int = 100, deviceId: String? = nil) throws -> [HistoryEntry] {
        try database.read { db in
            var request = HistoryEntry.order(Column("createdAt").desc, Column("rowid").desc)
            if let deviceId { request = request.filter(Column("deviceId") == deviceId) }
            return try request.limit(max(0, limit)).fetchAll(db)
        }
    }

    public func entry(jobId: String) throws -> HistoryEntry? {
        try database.read { try HistoryEntry.fetchOne($0, key: ["jobId": jobId]) }
    }

    /// True if the device was ever flashed to completion (auto-flash's "once per serial").
    public func hasCompleted(deviceId: String) throws -> Bool {
        try database.read { db in
            try HistoryEntry.filter(Column("deviceId") == deviceId && Column("result") == JobState.completed.rawValue).fetchCount(db) > 0
        }
    }

    /// True if the medium (a disk's serial and size) was ever written to completion (auto-flash's
    /// "once per medium").
    public func hasCompleted(medium: String) throws -> Bool {
        try database.read { db in
            try HistoryEntry.filter(Column("medium") == medium && Column("result") == JobState.completed.rawValue).fetchCount(db) > 0
        }
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "job") { table in
                table.primaryKey("jobId", .text)
                table.column("deviceId", .text).notNull().indexed()
                table.column("deviceName", .text)
                table.column("image", .text)
                table.column("partition", .text)
                table.column("totalBytes", .integer).notNull()
                table.column("bytesTransferred", .integer).notNull()
                table.column("sha256", .text)
                table.column("result", .text).notNull()
                table.column("error", .text)
                table.column("createdAt", .integer).notNull().indexed()
                table.column("startedAt", .integer)
                table.column("endedAt", .integer)
                table.column("durationMs", .integer)
                table.column("averageSpeed", .integer)
            }
        }
        migrator.registerMigration("v2: disk jobs") { db in
            try db.alter(table: "job") { table in
                table.add(column: "target", .text)
                table.add(column: "batchId", .text)
                table.add(column: "verified", .boolean)
                table.add(column: "medium", .text).indexed()
            }
        }
        migrator.registerMigration("v3: farm stations") { db in
            try db.alter(table: "job") { table in
                table.add(column: "station", .text)
            }
        }
        migrator.registerMigration("v4: farm outbox") { db in
            try db.create(table: "farm_outbox") { table in
                table.column("jobId", .text).primaryKey()
                table.column("deviceId", .text).notNull()
                table.column("state", .text).notNull()
                table.column("error", .text)
                table.column("finished", .boolean).notNull()
                table.column("entry", .text)
            }
        }
        migrator.registerMigration("v5: xxh128 of what a fastboot job sent") { db in
            try db.alter(table: "job") { table in
                table.add(column: "xxh128", .text)
            }
        }
        return migrator
    }
}
