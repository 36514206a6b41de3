import FlashEngine
import Foundation

/// How `flashctl devices` shows disks: the facts a person checks before writing one.
enum DiskListing {
    static func table(_ disks: [DiskInfo]) -> String {
        let header = ["DISK", "SIZE", "MODEL", "SERIAL", "TRANSPORT", "REMOVABLE", "MOUNTED"]
        let rows = disks.map { disk in
            [
                disk.path, HumanFormat.bytes(disk.size), disk.description, disk.serial ?? "-", disk.transport,
                disk.isRemovable ? "yes" : "no",
                disk.holdsSystem ? "system: " + disk.mountPoints.joined(separator: ",") : (disk.isMounted ? disk.mountPoints.joined(separator: ",") : "-"),
            ]
        }
        return TextTable.render(header: header, rows: rows)
    }

    static func json(_ disk: DiskInfo) -> String {
        var object: [String: Any] = [
            "id": disk.path, "kind": "disk", "size": disk.size, "transport": disk.transport,
            "removable": disk.isRemovable, "readOnly": disk.readOnly, "mountPoints": disk.mountPoints,
            "system": disk.holdsSystem,
        ]
        object["model"] = disk.model
        object["vendor"] = disk.vendor
        object["serial"] = disk.serial
        object["backingFile"] = disk.backingFile
        return JSONOutput.string(object, [.sortedKeys])
    }
}
