import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A directory of this user's own for runtime files (the emulators' registry, the partitions of
/// `serve --emulate`): `BASE/flashctl-UID`, made with mode 0700. One that exists already must be a
/// real directory (not a link) owned by this user that nobody else can write: another user could
/// otherwise have planted it in a shared /tmp, to read or replace what flashctl puts there.
public enum RuntimeDirectory {
    /// `$XDG_RUNTIME_DIR` (a private tmpfs per user) when set, else `$TMPDIR` or /tmp.
    public static func base(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        for key in ["XDG_RUNTIME_DIR", "TMPDIR"] {
            if let value = environment[key], !value.isEmpty { return value.hasSuffix("/") ? String(value.dropLast()) : value }
        }
        return "/tmp"
    }

    /// `base/flashctl-UID`, made if missing; throws naming the problem when it is not safe.
    public static func path(under base: String) throws -> String {
        let uid = geteuid()
        let path = base + "/flashctl-\(uid)"
        if mkdir(path, 0o700) != 0, errno != EEXIST {
            throw FlashError(.io, "cannot create the runtime directory \(path): \(errnoText(errno))")
        }
        var status = stat()
        guard lstat(path, &status) == 0 else {
            throw FlashError(.io, "cannot use the runtime directory \(path): \(errnoText(errno))")
        }
        guard (status.st_mode & S_IFMT) == S_IFDIR else {
            throw FlashError(.io, "\(path) is not a directory (a link or a file put there by someone): flashctl will not use it; remove it")
        }
        guard status.st_uid == uid else {
            throw FlashError(.io, "\(path) belongs to another user (uid \(status.st_uid)): flashctl will not use it; remove it, or set XDG_RUNTIME_DIR")
        }
        guard status.st_mode & 0o077 == 0 else {
            throw FlashError(.io, "\(path) can be read or written by other users (mode \(String(status.st_mode & 0o777, radix: 8))): flashctl will not use it; remove it")
        }
        return path
    }
}
