import ArgumentParser

struct DevicesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "devices", abstract: "List fastboot devices.")
    func run() throws { throw ValidationError("not built yet") }
}
