import ArgumentParser

@main
struct Flashctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flashctl",
        abstract: "Flash fastboot devices, USB drives and SD cards, with honest live progress.",
        subcommands: [
            DevicesCommand.self, FlashCommand.self, EmulateCommand.self, ServeCommand.self,
            JobsCommand.self, PauseCommand.self, ResumeCommand.self, CancelCommand.self, HistoryCommand.self,
            GetvarCommand.self, EraseCommand.self, RebootCommand.self, SetActiveCommand.self, OemCommand.self,
            FlashingCommand.self, BootCommand.self, UpdateCommand.self,
        ]
    )
}
