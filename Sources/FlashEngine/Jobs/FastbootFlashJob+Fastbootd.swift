/// The part of a factory update with dynamic partitions that runs in fastbootd: the reboot into
/// it, following the device back, the super metadata, and the logical partitions' sizes.
extension FastbootFlashJob {
    /// Reboots into fastbootd (unless there already), reconnects, sends the super metadata and
    /// `update-super`. Returns the new connection and its client.
    func enterFastbootd(
        _ phase: FastbootFlashRequest.UserspacePhase, client: FastbootClient, transport: FastbootTransport,
        progress: ProgressAggregator, cancelHandler: inout Int?
    ) throws -> (FastbootTransport, FastbootClient) {
        var transport = transport, client = client
        if try Self.variable("is-userspace", client) != "yes" {
            try control.waitWhilePaused()
            progress.setStage("Rebooting into fastbootd")
            do {
                try client.reboot(into: .fastboot)
            } catch let error as FlashError where error.kind == .disconnected {
                // Gone before its OKAY was read: it is rebooting, which is what was asked.
            }
            transport.close()
            cancelHandler.map(control.removeCancelHandler)
            cancelHandler = nil
            (transport, client) = try reconnect(progress: progress)
            cancelHandler = control.onCancel { [transport] in transport.interrupt() }
            guard try Self.variable("is-userspace", client) == "yes" else {
                throw FlashError(.protocolViolation, "\(device.info.deviceId) came back from 'reboot fastboot' without fastbootd (is-userspace is not yes)")
            }
        }
        progress.setStage("Updating the super partition")
        let metadata = try DecompressedStream(path: request.imagePath, format: .zip, entry: phase.superMetadataEntry)
        guard let size = metadata.knownSize, size > 0 else {
            throw FlashError(.image, "\(phase.superMetadataEntry) in \(request.imagePath) records no size")
        }
        let name = try Self.variable("super-partition-name", client) ?? "super"
        try client.download(metadata, size: size) { _ in }
        try client.command("update-super:\(name)\(request.wipe ? ":wipe" : "")", timeoutMs: request.timeouts.writeMs)
        return (transport, client)
    }

    /// Every logical partition the remaining images go to, in both slots, is resized to 0 first,
    /// as AOSP fastboot does, so that each is then allocated whole at its final size.
    func resetLogicalPartitions(_ partitions: [String], client: FastbootClient, progress: ProgressAggregator) throws {
        var names: [String] = []
        for partition in partitions {
            let base = partition.hasSuffix("_a") || partition.hasSuffix("_b") ? String(partition.dropLast(2)) : partition
            for name in base == partition ? [partition] : [base + "_a", base + "_b"] where !names.contains(name) {
                names.append(name)
            }
        }
        for name in names {
            try resizeIfLogical(name, to: 0, client: client)
        }
    }

    func resizeIfLogical(_ partition: String, to size: Int64, client: FastbootClient) throws {
        guard try Self.variable("is-logical:\(partition)", client) == "yes" else { return }
        try client.command("resize-logical-partition:\(partition):\(size)", timeoutMs: request.timeouts.writeMs)
    }

    /// The device after a reboot: found again at the same address (a USB port, a TCP address)
    /// and answering, waited for up to 60 s. Until it has left, the old one may still be found.
    private func reconnect(progress: ProgressAggregator) throws -> (FastbootTransport, FastbootClient) {
        let selector = try DeviceSelector.parse(device.info.addressSelector)
        var waited = 0.0
        while true {
            try control.checkCancelled()
            do {
                let transport = try finder.connect(try finder.find(selector), connectTimeoutMs: 2_000, control: control)
                let client = FastbootClient(transport: transport, timeouts: request.timeouts) { progress.deviceMessage($0) }
                do {
                    _ = try client.getvar("product")
                } catch {
                    transport.close()
                    throw error
                }
                return (transport, client)
            } catch let error as FlashError where error.kind != .cancelled {
                guard waited < 60 else {
                    throw FlashError(.disconnected, "\(device.info.deviceId) did not come back within 60 s of rebooting into fastbootd: \(error.message)")
                }
            }
            try control.sleep(seconds: 0.25)
            waited += 0.25
        }
    }
}
