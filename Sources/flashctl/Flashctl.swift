import ArgumentParser

@main
struct Flashctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flashctl",
        abstract: "Flash fastboot devices, USB drives and SD cards, with honest live progress.",
        subcommands: [DevicesCommand.self, FlashCommand.self, EmulateCommand.self]
    )
}
