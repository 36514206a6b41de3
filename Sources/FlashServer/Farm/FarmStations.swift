import FlashEngine
import Foundation
import Logging
import PostgresNIO

/// This station's row in the farm's `station` table, and what it reads of the others. Times are
/// the database's clock (`now()`), so stations whose clocks differ still agree on who is silent.
struct FarmStations: Sendable {
    /// A station not heard from for this long is lost.
    static let lostAfterSeconds = 10.0
    static let heartbeatSeconds = 2.0

    let client: PostgresClient
    let name: String
    /// Tells this run of the station from an earlier or a rival one under the same name.
    let instance = UUID()
    let logger: Logger

    /// Takes the station's name for this run. Refused while another station of that name is alive.
    func register(address: String) async throws {
        let rows = try await client.farmQuery("""
            INSERT INTO station (name, instance, address) VALUES (\(name), \(instance), \(address))
            ON CONFLICT (name) DO UPDATE SET instance = EXCLUDED.instance, address = EXCLUDED.address,
                started_at = now(), last_seen = now(), lost_at = NULL, stopped_at = NULL, devices = '[]', running_jobs = 0
            WHERE station.lost_at IS NOT NULL OR station.stopped_at IS NOT NULL
                OR station.last_seen < now() - make_interval(secs => \(Self.lostAfterSeconds))
            RETURNING name
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return }
        var holder = "another station"
        let current = try await client.farmQuery(
            "SELECT address, extract(epoch FROM now() - last_seen)::float8 FROM station WHERE name = \(name)", logger: logger)
        for try await (address, ago) in current.decode((String, Double).self) {
            holder = "a station at \(address), seen \(String(format: "%.1f", ago)) s ago"
        }
        throw FlashError(.io, "station name '\(name)' is taken by \(holder); give this one another --station")
    }

    /// Says this station is alive, with its devices (`[DeviceBody]` as JSON) and running jobs.
    /// Returns false when the row is no longer this run's (another station took the name).
    @discardableResult
    func heartbeat(address: String, devices: String, runningJobs: Int) async throws -> Bool {
        let rows = try await client.farmQuery("""
            UPDATE station SET last_seen = now(), lost_at = NULL, address = \(address),
                devices = \(devices)::jsonb, running_jobs = \(runningJobs)
            WHERE name = \(name) AND instance = \(instance)
            RETURNING name
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return true }
        return false
    }

    /// Marks every station silent for too long as lost; returns their names. Any station may run
    /// this: the update takes each lost station once.
    func declareLost() async throws -> [String] {
        let rows = try await client.farmQuery("""
            UPDATE station SET lost_at = now()
            WHERE lost_at IS NULL AND stopped_at IS NULL AND last_seen < now() - make_interval(secs => \(Self.lostAfterSeconds))
            RETURNING name
            """, logger: logger)
        var names: [String] = []
        for try await name in rows.decode(String.self) { names.append(name) }
        return names
    }

    /// A clean stop: the others show the station as stopped, not lost.
    func leave() async throws {
        try await client.farmQuery(
            "UPDATE station SET stopped_at = now(), running_jobs = 0 WHERE name = \(name) AND instance = \(instance)", logger: logger)
    }

    func list() async throws -> [StationBody] {
        let rows = try await client.farmQuery("""
            SELECT name, address, (extract(epoch FROM last_seen) * 1000)::int8, (extract(epoch FROM now() - last_seen) * 1000)::int8,
                lost_at IS NOT NULL, stopped_at IS NOT NULL, devices::text, running_jobs
            FROM station ORDER BY name
            """, logger: logger)
        var stations: [StationBody] = []
        for try await (name, address, lastSeen, silentMs, lost, stopped, devicesJSON, running) in rows.decode(
            (String, String, Int64, Int64, Bool, Bool, String, Int).self)
        {
            let state = stopped ? "stopped" : lost ? "lost" : "online"
            var devices = (try? JSONDecoder().decode([DeviceBody].self, from: Data(devicesJSON.utf8))) ?? []
            if state != "online" {
                for index in devices.indices {
                    devices[index].state = "offline"
                    devices[index].jobId = nil
                }
            }
            stations.append(StationBody(
                station: name, address: address, state: state, lastSeen: lastSeen, silentMs: silentMs,
                devices: devices, runningJobs: state == "online" ? running : 0))
        }
        return stations
    }
}
