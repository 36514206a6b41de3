import ArgumentParser

struct EmulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "emulate", abstract: "Serve an emulated fastboot device.")
    func run() throws { throw ValidationError("not built yet") }
}
