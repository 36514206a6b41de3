import FlashEngine
import Foundation
import Logging
import PostgresNIO

/// The farm's jobs in PostgreSQL (`farm_job`): submitted at any station for the station that has
/// the device, claimed there with `FOR UPDATE SKIP LOCKED` when a `NOTIFY` wakes it, and kept up
/// to date by the station that runs them.
struct FarmJobs: Sendable {
    /// The one channel of the farm: job notices (`{"type":"farm_job","station":…}`) and every
    /// station's job messages (docs/PROTOCOL.md's, with `station`).
    static let channel = "flashctl"

    let client: PostgresClient
    let station: String
    let logger: Logger

    /// The online station that has `deviceId`: `wanted` if given (checked), else the only one.
    func locate(deviceId: String, wanted: String?) async throws -> String {
        let rows = try await client.farmQuery("""
            SELECT name, lost_at IS NULL AND stopped_at IS NULL,
                devices @> jsonb_build_array(jsonb_build_object('deviceId', \(deviceId)::text))
            FROM station ORDER BY name
            """, logger: logger)
        var holders: [String] = []
        var known: [String: (online: Bool, hasDevice: Bool)] = [:]
        for try await (name, online, hasDevice) in rows.decode((String, Bool, Bool).self) {
            known[name] = (online, hasDevice)
            if online && hasDevice { holders.append(name) }
        }
        if let wanted {
            guard let state = known[wanted] else { throw APIError(.notFound, "no station '\(wanted)' in the farm") }
            guard state.online else { throw APIError(.conflict, "station '\(wanted)' is not online (lost or stopped)") }
            guard state.hasDevice else { throw APIError(.notFound, "station '\(wanted)' has no device '\(deviceId)'") }
            return wanted
        }
        switch holders.count {
        case 0: throw APIError(.notFound, "no device '\(deviceId)' at any online station of the farm")
        case 1: return holders[0]
        default: throw APIError(.conflict, "device '\(deviceId)' is at stations \(holders.joined(separator: ", ")): say which with \"station\"")
        }
    }

    /// Records a job for `target` and wakes it, in one transaction: the notice goes out only if
    /// the job is there to be claimed.
    func submit(jobId: String, to target: String, deviceId: String, request: String) async throws {
        let notice = #"{"type":"farm_job","station":"\#(target)"}"#
        try await FarmDeadline.run { [client, logger, station] in
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query("""
                    INSERT INTO farm_job (job_id, station, device_id, request, state, submitted_by)
                    VALUES (\(jobId), \(target), \(deviceId), \(request)::jsonb, 'submitted', \(station))
                    """, logger: logger)
                try await connection.query("SELECT pg_notify(\(Self.channel), \(notice))", logger: logger)
            }
        }
    }

    /// Takes the jobs waiting for this station; another station's claim never gets the same row.
    func claim(limit: Int = 64) async throws -> [(jobId: String, deviceId: String, request: String)] {
        let rows = try await client.farmQuery("""
            UPDATE farm_job SET state = 'claimed', claimed_at = now()
            WHERE job_id IN (
                SELECT job_id FROM farm_job WHERE station = \(station) AND state = 'submitted'
                ORDER BY submitted_at LIMIT \(limit) FOR UPDATE SKIP LOCKED)
            RETURNING job_id, device_id, request::text
            """, logger: logger)
        var claimed: [(String, String, String)] = []
        for try await row in rows.decode((String, String, String).self) { claimed.append(row) }
        return claimed
    }

    /// The state of a job this station runs (or refused), as it changes, with its history entry
    /// (`HistoryEntry` as JSON) when it has run.
    func record(jobId: String, deviceId: String, state: String, error: String?, finished: Bool, entry: String? = nil) async throws {
        try await client.farmQuery("""
            INSERT INTO farm_job (job_id, station, device_id, request, state, submitted_by, claimed_at, error, ended_at, entry)
            VALUES (\(jobId), \(station), \(deviceId), '{}'::jsonb, \(state), \(station), now(), \(error),
                CASE WHEN \(finished) THEN now() END, \(entry)::jsonb)
            ON CONFLICT (job_id) DO UPDATE SET state = EXCLUDED.state, error = EXCLUDED.error,
                ended_at = COALESCE(farm_job.ended_at, EXCLUDED.ended_at), entry = COALESCE(EXCLUDED.entry, farm_job.entry)
            """, logger: logger)
    }

    /// The farm's history, newest first: each job as its station recorded it, with the farm's
    /// word on how it ended (a lost station's jobs, jobs refused or cancelled before they ran).
    func history(limit: Int, deviceId: String?, jobId: String? = nil) async throws -> [HistoryEntry] {
        let rows = try await client.farmQuery("""
            SELECT (COALESCE(entry, jsonb_build_object('jobId', job_id, 'deviceId', device_id, 'image', request->>'image',
                    'partition', request->>'partition', 'totalBytes', 0, 'bytesTransferred', 0,
                    'createdAt', (extract(epoch FROM submitted_at) * 1000)::int8))
                || jsonb_strip_nulls(jsonb_build_object('result', state, 'station', station, 'error', COALESCE(error, entry->>'error'),
                    'endedAt', COALESCE(entry->'endedAt', to_jsonb((extract(epoch FROM ended_at) * 1000)::int8)))))::text
            FROM farm_job WHERE (\(deviceId)::text IS NULL OR device_id = \(deviceId)) AND (\(jobId)::text IS NULL OR job_id = \(jobId))
            ORDER BY submitted_at DESC LIMIT \(limit)
            """, logger: logger)
        var entries: [HistoryEntry] = []
        let decoder = JSONDecoder()
        for try await json in rows.decode(String.self) {
            entries.append(try decoder.decode(HistoryEntry.self, from: Data(json.utf8)))
        }
        return entries
    }

    /// The unfinished jobs of stations declared lost end `interrupted`; returns them (each once,
    /// to whichever station's update took it), for their `flash_failed` to go to every station.
    func interruptJobsOfLostStations() async throws -> [(jobId: String, deviceId: String, station: String, error: String)] {
        let rows = try await client.farmQuery("""
            UPDATE farm_job SET state = 'interrupted', ended_at = now(),
                error = CASE WHEN state = 'submitted'
                    THEN format('station %L was lost before it took the job', station)
                    ELSE format('station %L was lost (silent for 10 s) during the job', station) END
            WHERE state IN ('submitted', 'claimed', 'queued', 'running', 'paused')
                AND station IN (SELECT name FROM station WHERE lost_at IS NOT NULL)
            RETURNING job_id, device_id, station, error
            """, logger: logger)
        var interrupted: [(String, String, String, String)] = []
        for try await row in rows.decode((String, String, String, String).self) { interrupted.append(row) }
        return interrupted
    }

    /// The jobs other online stations are running now, with their history entries (as JSON): what
    /// a station that just joined replays to its dashboards.
    func runningElsewhere() async throws -> [(jobId: String, deviceId: String, station: String, paused: Bool, entry: String?)] {
        let rows = try await client.farmQuery("""
            SELECT job_id, device_id, station, state = 'paused', entry::text FROM farm_job
            WHERE state IN ('running', 'paused') AND station <> \(station)
                AND station IN (SELECT name FROM station WHERE lost_at IS NULL AND stopped_at IS NULL)
            ORDER BY claimed_at
            """, logger: logger)
        var running: [(String, String, String, Bool, String?)] = []
        for try await row in rows.decode((String, String, String, Bool, String?).self) { running.append(row) }
        return running
    }

    /// Which station a farm job is for, and its state; nil for a job the farm does not know.
    func find(jobId: String) async throws -> (station: String, deviceId: String, state: String)? {
        let rows = try await client.farmQuery("SELECT station, device_id, state FROM farm_job WHERE job_id = \(jobId)", logger: logger)
        for try await row in rows.decode((String, String, String).self) { return row }
        return nil
    }

    /// Cancels a job no station has taken yet; false when it was taken meanwhile.
    func cancelWaiting(jobId: String) async throws -> Bool {
        let rows = try await client.farmQuery("""
            UPDATE farm_job SET state = 'cancelled', ended_at = now(), error = \(StopCause.user.message)
            WHERE job_id = \(jobId) AND state = 'submitted' RETURNING job_id
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return true }
        return false
    }

    /// Asks the station running a job to pause, resume or cancel it.
    func send(_ action: String, jobId: String, to target: String) async throws {
        let notice = #"{"type":"farm_command","station":"\#(target)","jobId":"\#(jobId)","action":"\#(action)"}"#
        try await client.farmQuery("SELECT pg_notify(\(Self.channel), \(notice))", logger: logger)
    }

    /// Tells every station about a message of one of this station's jobs.
    func announce(_ json: String) async throws {
        try await client.farmQuery("SELECT pg_notify(\(Self.channel), \(json))", logger: logger)
    }
}
