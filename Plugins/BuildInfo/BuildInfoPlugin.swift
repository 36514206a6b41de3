import Foundation
import PackagePlugin

/// Gives the flashctl target `BuildInfo.version` (the VERSION file) and `BuildInfo.commit` (the git
/// commit it is built from), written by scripts/build-info.sh before each build.
@main
struct BuildInfoPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let package = context.package.directoryURL
        let output = context.pluginWorkDirectoryURL.appending(path: "generated")
        return [
            .prebuildCommand(
                displayName: "flashctl version and commit",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: [package.appending(path: "scripts/build-info.sh").path, package.path, output.appending(path: "BuildInfo.swift").path],
                outputFilesDirectory: output
            )
        ]
    }
}
