import ArgumentParser
import Foundation

/// Asks a person before something that cannot be undone.
enum Confirmation {
    /// Prints `question` on stderr and reads the answer; anything but y or yes refuses with
    /// `refused`. With `assumeYes` nothing is asked; without a terminal to ask on, --yes is needed.
    static func ask(_ question: String, assumeYes: Bool, refused: String) throws {
        if assumeYes { return }
        guard isatty(STDIN_FILENO) != 0 else {
            throw ValidationError("\(refused): standard input is not a terminal, so add --yes to go on without asking")
        }
        ProgressRenderer.writeAll("\(question) [y/N] ", to: STDERR_FILENO)
        let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased()
        guard answer == "y" || answer == "yes" else { throw ValidationError(refused) }
    }
}
