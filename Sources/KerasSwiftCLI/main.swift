import ArgumentParser
import Foundation
import SwiftKeras
import TensorEngine

/// keras-swift: Keras models on the command line, with no Python.
struct KerasSwift: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keras-swift",
        abstract: "Run Keras 3 .keras models with the keras-swift engine (no Python).",
        subcommands: [Predict.self, Summary.self]
    )
}

/// An error printed as "Error: message" with exit status 1 (a ValidationError would add the usage text).
struct Failure: Error, CustomStringConvertible {
    let description: String
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predict: one .npy per model input, in order; one output → .npy, several → .npz.")

    @Argument(help: "The .keras model file.") var model: String
    @Argument(help: "One .npy file per model input, in order.") var inputs: [String]
    @Option(name: .shortAndLong, help: "Where to write the prediction (.npy, or .npz for several outputs).")
    var output: String

    func run() throws {
        do {
            let m = try Model.load(model)
            let ys = try m.predict(try inputs.map { try NumPy.load($0) })
            if output.hasSuffix(".npz") {
                // Arrays are named after the output layers; a layer with several outputs numbers them.
                let names = m.outputNames
                try NumPy.saveArchive(output, ys.enumerated().map { i, y in
                    (names.filter { $0 == names[i] }.count > 1 ? "\(names[i])_\(i)" : names[i], y)
                })
            } else {
                guard ys.count == 1 else {
                    throw Failure(description: "the model has \(ys.count) outputs: write them to an .npz file")
                }
                try NumPy.save(output, ys[0])
            }
        } catch let e as EngineError {
            throw Failure(description: e.message)
        }
    }
}

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the model's layers as Keras's model.summary() does.")

    @Argument(help: "The .keras model file.") var model: String

    func run() throws {
        do {
            print(try Model.load(model).summary(), terminator: "")
        } catch let e as EngineError {
            throw Failure(description: e.message)
        }
    }
}

KerasSwift.main()
