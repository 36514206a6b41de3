#if canImport(Glibc)
import Glibc
#endif

/// A factory image zip, what `fastboot update` takes (`image-PRODUCT-BUILD.zip`): android-info.txt
/// and the partition images, flashed as AOSP fastboot flashes them: the boot-critical images
/// first, then the OS images, each in the order of fastboot's table. Files fastboot would not
/// flash are left alone. With dynamic partitions (`super_empty.img`, the metadata of `super`) the
/// OS images are flashed from fastbootd, after the metadata.
public struct FactoryImage: Sendable, Equatable {
    /// A partition (without slot) and the zip entry flashed to it.
    public struct Image: Sendable, Equatable {
        public var partition: String
        public var entry: String
    }

    public let path: String
    public let info: AndroidInfo
    /// What is flashed, in order.
    public let images: [Image]
    /// `super_empty.img` when the device has dynamic partitions.
    public let superMetadata: String?
    /// How many of `images` are boot-critical (flashed first, from the bootloader).
    public let bootCriticalCount: Int

    /// Boot-critical partitions, then the others, in AOSP fastboot's order.
    static let bootCritical = [
        "boot", "init_boot", "dtbo", "dts", "pvmfw", "recovery", "vbmeta", "vbmeta_system", "vbmeta_vendor",
        "vendor_boot", "vendor_kernel_boot",
    ]
    static let operatingSystem = ["odm", "odm_dlkm", "product", "product_services", "system", "system_dlkm", "system_ext", "vendor", "vendor_dlkm"]

    /// The file in the zip for a partition (`dts` is `dt.img`).
    static func file(for partition: String) -> String {
        partition == "dts" ? "dt.img" : partition + ".img"
    }

    public static func open(path: String) throws -> FactoryImage {
        var status = stat()
        guard stat(path, &status) == 0 else { throw ImageDescriptor.openError(path: path, errno: errno) }
        let files = try DecompressedStream.zipFiles(path)
        let names = Set(files.map(\.name))
        guard names.contains("android-info.txt") else {
            throw FlashError(.image, "\(path) is not a factory image: it holds no android-info.txt")
        }
        let info = try AndroidInfo(parsing: try readText(entry: "android-info.txt", of: path))
        let present = { (partitions: [String]) in
            partitions.compactMap { names.contains(file(for: $0)) ? Image(partition: $0, entry: file(for: $0)) : nil }
        }
        let boot = present(bootCritical)
        let images = boot + present(operatingSystem)
        guard !images.isEmpty else {
            throw FlashError(.image, "\(path) holds no image fastboot update flashes (boot.img, system.img, vendor.img...)")
        }
        return FactoryImage(
            path: path, info: info, images: images,
            superMetadata: names.contains("super_empty.img") ? "super_empty.img" : nil, bootCriticalCount: boot.count)
    }

    /// The job that flashes it: one job, every image in order, the checks first.
    /// `slot`: the slot to write (and make active first: a or b, or a for all), as `fastboot --slot`.
    public func request(device: DeviceSelector?, slot: SlotChoice?, wipe: Bool, reboot: Bool, timeouts: FastbootTimeouts = FastbootTimeouts()) -> FastbootFlashRequest {
        let activate: String?
        switch slot {
        case .slot(let name): activate = name
        case .all: activate = "a"
        default: activate = nil
        }
        return FastbootFlashRequest(
            imagePath: path, partition: images[0].partition, device: device, reboot: reboot, timeouts: timeouts,
            extraImages: images.dropFirst().map { .init(imagePath: path, partition: $0.partition, entry: $0.entry) },
            noBmap: true, entry: images[0].entry, slot: slot, activateSlot: activate, requirements: info, wipe: wipe,
            userspace: superMetadata.map { .init(firstImage: bootCriticalCount, superMetadataEntry: $0) })
    }

    private static func readText(entry: String, of path: String) throws -> String {
        let stream = try DecompressedStream(path: path, format: .zip, entry: entry)
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try stream.read(into: $0) }
            if n == 0 { break }
            bytes += buffer[0..<n]
            guard bytes.count <= 1 << 20 else { throw FlashError(.image, "\(entry) in \(path) is over 1 MiB: not an android-info.txt") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
