// swift-tools-version: 6.0
// libFuzzer targets over kurir's request decoding/validation and gateway response classification.
// Built on its own so ordinary builds never pay for the sanitizers: see `make fuzz` and docs/chaos.md.
import PackageDescription

let package = Package(
    name: "kurir-fuzz",
    dependencies: [.package(name: "kurir", path: "..")],
    targets: [
        .executableTarget(
            name: "kurir-fuzz",
            dependencies: [
                .product(name: "KurirCore", package: "kurir"),
                .product(name: "KurirJSON", package: "kurir"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6), .unsafeFlags(["-parse-as-library"])])
    ]
)
