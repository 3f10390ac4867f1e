// Runs a graph saved by keras-swift (a compiled Keras step written with
// `_swiftkeras.graph_save`, or any `te_graph_save`/`Program.save` file) from Swift, with no
// Python: reads DIR/input_<i>.bin, the raw row-major bytes of input i in the dtype and shape
// the graph was traced with, runs the graph once and writes DIR/output_<i>.bin the same way.
// Examples/c/run_graph.c does the same through the C ABI.
//
//   swift run -c release run-graph step.graph DIR
//   swift run -c release run-graph step.graph --describe
import ArgumentParser
import TensorEngine
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@main
struct RunGraph: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run-graph",
        abstract: "Run a saved keras-swift graph on raw input files.")

    @Argument(help: "A graph file written by graph_save, te_graph_save or Program.save.")
    var graph: String

    @Argument(help: "The folder holding input_<i>.bin; output_<i>.bin are written there.")
    var dir: String?

    @Flag(help: "Print the graph's inputs and outputs (dtype and shape) and exit.")
    var describe = false

    func run() throws {
        let program = try Program.load(from: graph)
        if describe {
            for (i, input) in program.inputs.enumerated() { print("input \(i): \(input.spec)") }
            for (i, output) in program.outputs.enumerated() { print("output \(i): \(output.spec)") }
            return
        }
        guard let dir = dir else { throw ValidationError("DIR is required unless --describe is given") }
        let inputs = try program.inputs.indices.map { i in
            try readTensor("\(dir)/input_\(i).bin", program.inputs[i].spec)
        }
        let outputs = try program.run(inputs: inputs)
        for (i, t) in outputs.enumerated() { try writeTensor(t, "\(dir)/output_\(i).bin") }
        print("ran \(graph): \(inputs.count) inputs, \(outputs.count) outputs")
    }
}

func readTensor(_ path: String, _ spec: TensorSpec) throws -> Tensor {
    let t = try Tensor(zeros: spec.shape, dtype: spec.dtype)
    guard let f = fopen(path, "rb") else { throw ValidationError("cannot open \(path)") }
    defer { fclose(f) }
    let got = t.nbytes == 0 ? 0 : fread(t.rawPointer, 1, t.nbytes, f)
    guard got == t.nbytes, fgetc(f) == EOF else {
        throw ValidationError("\(path) does not hold the \(t.nbytes) bytes of a \(spec) input")
    }
    return t
}

func writeTensor(_ t: Tensor, _ path: String) throws {
    guard let f = fopen(path, "wb") else { throw ValidationError("cannot write \(path)") }
    let put = t.nbytes == 0 ? 0 : fwrite(t.rawPointer, 1, t.nbytes, f)
    guard fclose(f) == 0, put == t.nbytes else { throw ValidationError("cannot write \(path)") }
}
