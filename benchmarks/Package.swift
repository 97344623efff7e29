// swift-tools-version: 6.1
// Micro-benchmarks of kurir's hot pure functions (ordo-one/benchmark): request decoding, validation,
// gateway reply classification and event encoding. Built on its own so ordinary builds never pay for
// the benchmark package and its malloc interposer: see `make microbench` and docs/performance.md.
import PackageDescription

let package = Package(
    name: "kurir-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        // Only the malloc interposer: the default traits add the ARC runtime interposer, whose package the
        // local mirror lacks (resolution fails) and whose ARC metrics these benchmarks leave out anyway.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(name: "kurir", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "KurirHotPaths",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "KurirCore", package: "kurir"),
                .product(name: "KurirJSON", package: "kurir"),
            ],
            path: "Benchmarks/KurirHotPaths",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")])
    ]
)
