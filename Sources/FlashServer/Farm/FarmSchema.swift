import FlashEngine
import Logging
import PostgresNIO

/// The farm's tables in PostgreSQL. Each station applies the migrations it lacks at start, under
/// an advisory lock, so that stations starting together do it once, one after the other.
enum FarmSchema {
    /// `pg_advisory_lock` key: "flashctl" in ASCII.
    static let lockKey: Int64 = 0x666c_6173_6863_746c

    /// Version N is `migrations[N - 1]`; never edit one that has shipped, add the next.
    static let migrations: [[String]] = [
        [
            """
            CREATE TABLE station (
                name text PRIMARY KEY,
                instance uuid NOT NULL,
                address text NOT NULL,
                started_at timestamptz NOT NULL DEFAULT now(),
                last_seen timestamptz NOT NULL DEFAULT now(),
                lost_at timestamptz,
                stopped_at timestamptz,
                devices jsonb NOT NULL DEFAULT '[]',
                running_jobs integer NOT NULL DEFAULT 0
            )
            """,
        ],
        [
            """
            CREATE TABLE farm_job (
                job_id text PRIMARY KEY,
                station text NOT NULL,
                device_id text NOT NULL,
                request jsonb NOT NULL,
                state text NOT NULL,
                submitted_by text NOT NULL,
                submitted_at timestamptz NOT NULL DEFAULT now(),
                claimed_at timestamptz,
                ended_at timestamptz,
                error text
            )
            """,
            "CREATE INDEX farm_job_waiting ON farm_job (station, submitted_at) WHERE state = 'submitted'",
            "CREATE INDEX farm_job_unfinished ON farm_job (station) WHERE state IN ('submitted', 'claimed', 'queued', 'running', 'paused')",
            // The job as the history shows it (a HistoryEntry), once its station has run it.
            "ALTER TABLE farm_job ADD COLUMN entry jsonb",
            "CREATE INDEX farm_job_history ON farm_job (submitted_at DESC)",
        ],
    ]

    /// Brings the database to the newest version; returns it.
    @discardableResult
    static func migrate(_ connection: PostgresConnection, logger: Logger) async throws -> Int {
        try await connection.query("SELECT pg_advisory_lock(\(lockKey))", logger: logger)
        do {
            try await connection.query("CREATE TABLE IF NOT EXISTS flashctl_schema (version integer NOT NULL)", logger: logger)
            var version = 0
            for try await found in try await connection.query("SELECT version FROM flashctl_schema", logger: logger).decode(Int.self) {
                version = found
            }
            guard version <= migrations.count else {
                throw FlashError(.io, "the farm database has schema version \(version), newer than this flashctl knows (\(migrations.count)): upgrade flashctl on this station")
            }
            for (index, statements) in migrations.enumerated() where index + 1 > version {
                try await connection.query("BEGIN", logger: logger)
                for statement in statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("DELETE FROM flashctl_schema", logger: logger)
                try await connection.query("INSERT INTO flashctl_schema (version) VALUES (\(index + 1))", logger: logger)
                try await connection.query("COMMIT", logger: logger)
                logger.info("farm database schema now at version \(index + 1)")
            }
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            _ = try? await connection.query("SELECT pg_advisory_unlock(\(lockKey))", logger: logger)
            throw error
        }
        try await connection.query("SELECT pg_advisory_unlock(\(lockKey))", logger: logger)
        return migrations.count
    }
}
