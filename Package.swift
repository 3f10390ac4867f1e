// swift-tools-version:5.9
// Language mode 5: the engine's thread-local and registry globals are guarded by
// construction (pthread keys, lazy `let`s), which Swift 6's checker cannot see.
import PackageDescription

let package = Package(
    name: "keras-swift",
    products: [
        .library(name: "TensorEngine", targets: ["TensorEngine"]),
        .library(name: "TensorEngineC", type: .dynamic, targets: ["TensorEngineC"]),
        .library(name: "SwiftKeras", targets: ["SwiftKeras"]),
        // Keras model files from C: a library of its own, so the Python wheel's engine
        // (TensorEngineC) links neither HDF5 nor the zip package.
        .library(name: "SwiftKerasC", type: .dynamic, targets: ["SwiftKerasC"]),
        .executable(name: "keras-swift", targets: ["KerasSwiftCLI"]),
        .executable(name: "DigitsMLP", targets: ["DigitsMLP"]),
        .executable(name: "DigitsConvnet", targets: ["DigitsConvnet"]),
        .executable(name: "run-graph", targets: ["RunGraph"]),
    ],
    dependencies: [
        // Command lines of the example tools.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // .keras and .npz files are zip archives.
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS",
            path: "Sources/COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .target(name: "TensorEngine", dependencies: ["COpenBLAS"]),
        // The C ABI's header as a Clang module, so the Swift side is compiled against the
        // declarations C callers use (te_attr's layout, the enums) instead of copies.
        .systemLibrary(name: "CTensorEngine", path: "Sources/TensorEngineC/include"),
        .target(name: "TensorEngineC", dependencies: ["TensorEngine", "CTensorEngine"], exclude: ["include"]),
        // HDF5's C library (Keras's weight files), Debian's serial build.
        .systemLibrary(
            name: "CHDF5",
            path: "Sources/CHDF5",
            pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]
        ),
        .target(name: "SwiftKeras", dependencies: ["TensorEngine", "CHDF5", .product(name: "ZIPFoundation", package: "ZIPFoundation")]),
        .systemLibrary(name: "CSwiftKerasModel", path: "Sources/SwiftKerasC/include"),
        .target(name: "SwiftKerasC", dependencies: ["SwiftKeras", "TensorEngine", "CSwiftKerasModel", "CTensorEngine"], exclude: ["include"]),
        .executableTarget(
            name: "KerasSwiftCLI",
            dependencies: ["SwiftKeras", "TensorEngine", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/KerasSwiftCLI"
        ),
        .executableTarget(
            name: "DigitsMLP",
            dependencies: ["SwiftKeras", "TensorEngine"],
            path: "Examples/DigitsMLP",
            exclude: ["digits.bin"]
        ),
        .executableTarget(name: "DigitsConvnet", dependencies: ["SwiftKeras", "TensorEngine"], path: "Examples/DigitsConvnet"),
        .executableTarget(
            name: "RunGraph",
            dependencies: ["TensorEngine", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Examples/RunGraph"
        ),
        .testTarget(name: "TensorEngineTests", dependencies: ["TensorEngine"]),
        .testTarget(name: "TensorEngineCTests", dependencies: ["TensorEngineC", "TensorEngine", "CTensorEngine"]),
        .testTarget(name: "SwiftKerasTests", dependencies: ["SwiftKeras", "SwiftKerasC", "TensorEngine", "CTensorEngine"], exclude: ["Fixtures"]),
    ]
)
