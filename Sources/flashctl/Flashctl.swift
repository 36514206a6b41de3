import ArgumentParser
import FlashEngine
import Foundation

@main
struct Flashctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flashctl",
        abstract: "Flash fastboot devices, USB drives and SD cards, with honest live progress.",
        version: BuildInfo.commit == "unknown" ? "\(BuildInfo.version) (unknown commit)" : "\(BuildInfo.version) (commit \(BuildInfo.commit))",
        subcommands: [
            DevicesCommand.self, FlashCommand.self, EmulateCommand.self, ServeCommand.self,
            JobsCommand.self, PauseCommand.self, ResumeCommand.self, CancelCommand.self, HistoryCommand.self,
            GetvarCommand.self, EraseCommand.self, RebootCommand.self, SetActiveCommand.self, OemCommand.self,
            FlashingCommand.self, BootCommand.self, UpdateCommand.self,
        ]
    )

    /// ArgumentParser's own handling for what was typed (errors with the usage line, --help,
    /// --version); an error while a command runs is not a usage mistake, so it is printed as one
    /// line without the usage.
    static func main() async {
        let parsed: ParsableCommand
        do {
            parsed = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            if var command = parsed as? AsyncParsableCommand {
                try await command.run()
            } else {
                var command = parsed
                try command.run()
            }
        } catch where error is CleanExit || error is ExitCode || !isFlashctlCommand(parsed) {
            // ArgumentParser's own commands (--help, completion scripts) end its way.
            exit(withError: error)
        } catch {
            CommandFailure.exit(error)
        }
    }
}

private func isFlashctlCommand(_ command: ParsableCommand) -> Bool {
    let type = ObjectIdentifier(Swift.type(of: command))
    return type == ObjectIdentifier(Flashctl.self) || Flashctl.configuration.subcommands.contains { ObjectIdentifier($0) == type }
}

/// How flashctl ends on an error while a command runs: `flashctl: error: MESSAGE`, status 1.
enum CommandFailure {
    static func exit(_ error: Error) -> Never {
        let message: String
        switch error {
        case let error as ValidationError: message = error.message
        case let error as FlashError: message = error.message
        default: message = "\(error)"
        }
        ProgressRenderer.writeAll("flashctl: error: \(message)\n", to: STDERR_FILENO)
        Foundation.exit(1)
    }
}
