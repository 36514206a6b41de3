import Crypto

extension DiskInfo {
    /// A short token for this disk as it is now: its path, serial, size and kernel device number.
    /// A face that shows a person a disk hands the token back with the job, so a card swapped
    /// into the same slot, or another disk given the same name, is not written by mistake.
    public var confirmationToken: String {
        let identity = [path, serial ?? "", String(size), deviceNumber].joined(separator: "\n")
        return SHA256.hash(data: Array(identity.utf8)).prefix(8).map { byteHex($0) }.joined()
    }
}

extension DiskTarget {
    /// Refuses a disk whose confirmation token is missing or is not the disk's token now, naming
    /// the disk as it is now. (A regular file has no token: faces that confirm take disks only.)
    func checkConfirmed(_ token: String?) throws {
        guard let disk else { return }
        guard let token, !token.isEmpty else {
            throw FlashError(.notConfirmed, "\(summary): not confirmed (GET /api/devices gives its confirm token)")
        }
        guard token == disk.confirmationToken else {
            throw FlashError(.notConfirmed, "\(path) is not the disk that was confirmed; it is now \(summary)")
        }
    }
}
