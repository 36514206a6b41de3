import CXXHash

/// XXH3-128 of bytes fed in order, written as `xxh128sum` writes it (32 hex digits).
///
/// The digest of "these are the bytes that went out": it runs at memory speed (about 20 times
/// SHA-256 on one core), so recording what was sent costs a station next to nothing. It proves
/// equality, not origin: where a person compares with a published checksum, SHA-256 is used.
public final class XXH128Digest: @unchecked Sendable {
    private let state: OpaquePointer

    public init() {
        state = XXH3_createState()
        XXH3_128bits_reset(state)
    }

    deinit {
        XXH3_freeState(state)
    }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        XXH3_128bits_update(state, base, bytes.count)
    }

    /// The digest of everything fed so far (more may be fed after).
    public func finalizeHex() -> String {
        var canonical = XXH128_canonical_t()
        XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state))
        return withUnsafeBytes(of: &canonical.digest) { $0.map { byteHex($0) }.joined() }
    }
}
