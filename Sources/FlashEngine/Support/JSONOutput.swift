import Foundation

/// Every JSON document the CLI prints and the server sends is made here, so that paths and URLs
/// read as written (`/dev/sdb`, not `\/dev\/sdb`, which Foundation writes by default).
public enum JSONOutput {
    public static func encoder(_ formatting: JSONEncoder.OutputFormatting = []) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = formatting.union(.withoutEscapingSlashes)
        return encoder
    }

    /// A JSONSerialization object (dictionaries, arrays, strings, numbers) as text.
    public static func string(_ object: Any, _ options: JSONSerialization.WritingOptions = []) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: options.union(.withoutEscapingSlashes))) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// A Codable value as text ("{}" if it cannot be encoded, which the types here never are).
    public static func string<Value: Encodable>(_ value: Value, _ formatting: JSONEncoder.OutputFormatting = []) -> String {
        String(decoding: (try? encoder(formatting).encode(value)) ?? Data("{}".utf8), as: UTF8.self)
    }
}
