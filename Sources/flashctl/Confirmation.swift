import ArgumentParser
import Foundation

/// Asks a person before something that cannot be undone.
enum Confirmation {
    /// Prints `prompt` on stderr and reads the answer; anything but one of `accepted` refuses with
    /// `refused`. With `assumeYes` nothing is asked; without a terminal to ask on, --yes is needed
    /// (`noTerminal` says so).
    static func ask(_ prompt: String, accepted: Set<String>, assumeYes: Bool, noTerminal: String, refused: String) throws {
        if assumeYes { return }
        guard isatty(STDIN_FILENO) != 0 else { throw ValidationError(noTerminal) }
        ProgressRenderer.writeAll(prompt, to: STDERR_FILENO)
        let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        guard accepted.contains(answer) else { throw ValidationError(refused) }
    }
}
