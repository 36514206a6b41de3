import FlashEngine
import NIOSSL

/// The server's TLS settings from a PEM certificate chain and private key (`--tls-cert`,
/// `--tls-key`), loaded at start so a wrong file stops the server with the file's name.
enum ServerTLS {
    static func configuration(certificate: String?, key: String?) throws -> TLSConfiguration? {
        guard let certificate, let key else { return nil }
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificate)
        } catch {
            throw FlashError(.io, "cannot read the TLS certificate \(certificate) (PEM expected): \(error)")
        }
        guard !chain.isEmpty else { throw FlashError(.io, "the TLS certificate file \(certificate) holds no certificate") }
        let privateKey: NIOSSLPrivateKey
        do {
            privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
        } catch {
            throw FlashError(.io, "cannot read the TLS private key \(key) (PEM expected): \(error)")
        }
        return TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
    }
}
