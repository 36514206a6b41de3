// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "flashctl",
    products: [
        .executable(name: "flashctl", targets: ["flashctl"]),
        .library(name: "FlashEngine", targets: ["FlashEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibUSB",
            pkgConfig: "libusb-1.0",
            providers: [.apt(["libusb-1.0-0-dev"])]
        ),
        .target(
            name: "FlashEngine",
            dependencies: ["CLibUSB"]
        ),
        .executableTarget(
            name: "flashctl",
            dependencies: [
                "FlashEngine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "FlashEngineTests",
            dependencies: ["FlashEngine"]
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["FlashEngine", "flashctl"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
