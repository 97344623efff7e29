// swift-tools-version: 6.0
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "kurir",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kurir", targets: ["kurir"]),
        .executable(name: "kurir-fake-gateway", targets: ["kurir-fake-gateway"]),
        .executable(name: "kurir-bench", targets: ["kurir-bench"]),
        .executable(name: "kurir-chaos", targets: ["kurir-chaos"]),
        // For the nested fuzzing package (fuzz/), which builds these with -sanitize=fuzzer.
        .library(name: "KurirCore", targets: ["KurirCore"]),
        .library(name: "KurirJSON", targets: ["KurirJSON"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // C libraries, found with pkg-config. Each is imported by exactly one Swift module.
        .systemLibrary(
            name: "CMosquitto", pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]),
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(
            name: "CJansson", pkgConfig: "jansson",
            providers: [.apt(["libjansson-dev"])]),

        // Every rule of the contract, as pure code: no C, no I/O, no clock.
        .target(name: "KurirCore", swiftSettings: strict),

        // Adapters: the only modules that import C.
        .target(name: "KurirJSON", dependencies: ["CJansson", "KurirCore"], swiftSettings: strict),
        .target(name: "KurirHTTP", dependencies: ["CCurl"], swiftSettings: strict),
        .target(name: "KurirMQTT", dependencies: ["CMosquitto"], swiftSettings: strict),
        .target(
            name: "KurirStore",
            dependencies: [
                "KurirCore", .product(name: "GRDB", package: "GRDB.swift"),
                // sqlite3_wal_hook, for the background checkpoint (Checkpointer).
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                "KurirWALWrites",
            ],
            swiftSettings: strict),
        // The VFS that writes a WAL commit's frames in one pwrite (wal_writes.c).
        .target(name: "KurirWALWrites", linkerSettings: [.linkedLibrary("sqlite3")]),

        // Wiring: services, the delivery loop, the outbox publisher, commands.
        .target(
            name: "KurirDaemon",
            dependencies: [
                "KurirCore", "KurirJSON", "KurirHTTP", "KurirMQTT", "KurirStore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "kurir",
            dependencies: [
                "KurirDaemon", "KurirCore", "KurirMallocConf",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict,
            // jemalloc replaces glibc's malloc in the daemon (Debian: libjemalloc-dev to build, libjemalloc2
            // to run). A delivery allocates on one thread and frees on another, which glibc's per-thread
            // arenas handle poorly: ~9 % less CPU per delivery (docs/performance.md, change 21).
            linkerSettings: [.linkedLibrary("jemalloc")]),

        // jemalloc's options for the daemon, as the `malloc_conf` symbol it reads at start.
        .target(name: "KurirMallocConf"),

        // Fake gateways and broker launcher: shared by tests, benchmarks and the demo.
        .target(
            name: "KurirTestSupport",
            dependencies: [
                "KurirCore", "KurirJSON", "KurirMQTT",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "kurir-fake-gateway",
            dependencies: [
                "KurirTestSupport", "KurirCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        // `make bench`: load generator, latency recorder and the side-by-side table.
        .executableTarget(
            name: "kurir-bench",
            dependencies: [
                "KurirTestSupport", "KurirCore", "KurirJSON", "KurirMQTT",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strict),
        // `make chaos`: fault injection against the built kurir, counted from the producer's side.
        .executableTarget(
            name: "kurir-chaos",
            dependencies: [
                "KurirTestSupport", "KurirCore", "KurirJSON", "KurirMQTT", "KurirStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // Read-only queries on kurir's database (counts, integrity_check) while kurir runs.
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strict),

        .testTarget(name: "KurirCoreTests", dependencies: ["KurirCore"], swiftSettings: strict),
        .testTarget(
            name: "KurirAdapterTests",
            dependencies: [
                "KurirJSON", "KurirHTTP", "KurirMQTT", "KurirStore", "KurirCore", "KurirTestSupport", "KurirWALWrites",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "KurirEndToEndTests",
            dependencies: ["KurirDaemon", "KurirCore", "KurirJSON", "KurirMQTT", "KurirStore", "KurirTestSupport"],
            swiftSettings: strict),
    ]
)
