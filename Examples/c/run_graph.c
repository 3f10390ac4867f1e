/* Runs a graph saved by keras-swift (a compiled Keras step, _swiftkeras.graph_save, or
 * te_graph_save) from C, with no Python: reads DIR/input_<i>.bin, the raw row-major bytes
 * of input i in the dtype and shape the graph was traced with, runs the graph once and
 * writes DIR/output_<i>.bin the same way.
 *
 *   cc -O2 run_graph.c -I Sources/TensorEngineC/include -L <dir of libTensorEngineC.so> \
 *      -lTensorEngineC -Wl,-rpath,<that dir> -o run_graph
 *   ./run_graph step.graph DIR
 */
#include <stdio.h>
#include <stdlib.h>

#include "tensor_engine.h"

enum { MAX_RANK = 64 };

static int fail(const char *what)
{
    fprintf(stderr, "run_graph: %s: %s\n", what, te_last_error());
    return 1;
}

/* Reads DIR/input_<i>.bin, which must hold exactly nbytes. */
static int read_exact(const char *dir, int i, void *buf, long nbytes)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/input_%d.bin", dir, i);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    long got = (long)fread(buf, 1, (size_t)nbytes, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != nbytes || extra) {
        fprintf(stderr, "run_graph: %s does not hold the %ld bytes the graph's input %d takes\n",
                path, nbytes, i);
        return -1;
    }
    return 0;
}

static int write_all(const char *dir, int i, const void *buf, long nbytes)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/output_%d.bin", dir, i);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    long put = nbytes ? (long)fwrite(buf, 1, (size_t)nbytes, f) : 0;
    return (fclose(f) == 0 && put == nbytes) ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s GRAPH DIR\n", argv[0]);
        return 2;
    }
    te_graph g = NULL;
    if (te_graph_load(argv[1], &g) != TE_OK) {
        return fail(argv[1]);
    }
    int n_in = te_graph_num_inputs(g), n_out = te_graph_num_outputs(g);
    te_tensor *ins = calloc((size_t)n_in + 1, sizeof *ins);
    te_tensor *outs = calloc((size_t)n_out + 1, sizeof *outs);
    int status = 1;
    int32_t got = 0;
    for (int i = 0; i < n_in; i++) {
        int32_t dtype;
        int64_t shape[MAX_RANK], count = 1;
        int32_t rank = te_graph_input_spec(g, i, &dtype, shape, MAX_RANK);
        for (int d = 0; d < rank; d++) {
            count *= shape[d];
        }
        long nbytes = (long)(count * te_dtype_itemsize(dtype));
        void *buf = malloc(nbytes ? (size_t)nbytes : 1);
        if (buf == NULL || read_exact(argv[2], i, buf, nbytes) != 0) {
            free(buf);
            goto done;
        }
        te_status st = te_tensor_create(dtype, shape, rank, buf, nbytes, &ins[i]);
        free(buf);
        if (st != TE_OK) {
            fail("te_tensor_create");
            goto done;
        }
    }
    if (te_graph_run(g, ins, n_in, outs, n_out, &got) != TE_OK) {
        fail("te_graph_run");
        goto done;
    }
    for (int i = 0; i < got; i++) {
        if (write_all(argv[2], i, te_tensor_data(outs[i]), (long)te_tensor_nbytes(outs[i])) != 0) {
            fprintf(stderr, "run_graph: cannot write output %d\n", i);
            goto done;
        }
    }
    printf("ran %s: %d inputs, %d outputs\n", argv[1], n_in, got);
    status = 0;
done:
    for (int i = 0; i < n_in; i++) {
        te_tensor_release(ins[i]);
    }
    for (int i = 0; i < got; i++) {
        te_tensor_release(outs[i]);
    }
    free(ins);
    free(outs);
    te_graph_release(g);
    return status;
}
