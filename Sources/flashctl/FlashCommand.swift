import ArgumentParser

struct FlashCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "flash", abstract: "Flash an image.")
    func run() throws { throw ValidationError("not built yet") }
}
