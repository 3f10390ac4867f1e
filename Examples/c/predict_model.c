/* Runs a Keras model (.keras, saved by Python Keras or SwiftKeras) from C, with no Python:
 * reads one .npy file per model input, predicts, writes OUTDIR/output_<i>.npy per output,
 * then predicts again from 4 threads at once and checks they all get the same bytes (the
 * model ABI is thread-safe for concurrent callers).
 *
 *   cc -O2 predict_model.c -I Sources/TensorEngineC/include -L <dir of libSwiftKerasC.so> \
 *      -lSwiftKerasC -lpthread -Wl,-rpath,<that dir> -o predict_model
 *   ./predict_model model.keras OUTDIR input0.npy [input1.npy ...]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "te_model.h"

enum { MAX_RANK = 32, MAX_INPUTS = 16, THREADS = 4 };

typedef struct {
    int32_t dtype, rank;
    int64_t shape[MAX_RANK];
    void *data;
    size_t nbytes;
} array;

static const struct {
    const char *descr;
    int32_t dtype;
    size_t size;
} kinds[] = {
    {"<f4", TE_FLOAT32, 4}, {"<f8", TE_FLOAT64, 8}, {"<i4", TE_INT32, 4}, {"<i8", TE_INT64, 8},
    {"|u1", TE_UINT8, 1},   {"|i1", TE_INT8, 1},    {"|b1", TE_BOOL, 1},
};

static size_t itemsize(int32_t dtype, const char **descr)
{
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (kinds[k].dtype == dtype) {
            if (descr) {
                *descr = kinds[k].descr;
            }
            return kinds[k].size;
        }
    }
    return 0;
}

/* Reads a little-endian, C-order .npy file (format 1.0) of one of the dtypes above. */
static int read_npy(const char *path, array *a)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    unsigned char head[10];
    char header[4096];
    int ok = fread(head, 1, 10, f) == 10 && memcmp(head, "\x93NUMPY\x01", 7) == 0;
    size_t hlen = ok ? (size_t)head[8] | (size_t)head[9] << 8 : 0;
    ok = ok && hlen < sizeof header && fread(header, 1, hlen, f) == hlen;
    header[ok ? hlen : 0] = '\0';
    const char *d = strstr(header, "'descr': '"), *s = strstr(header, "'shape': (");
    ok = ok && d && s && strstr(header, "'fortran_order': False");
    a->dtype = -1;
    for (size_t k = 0; ok && k < sizeof kinds / sizeof kinds[0]; k++) {
        if (strncmp(d + 10, kinds[k].descr, 3) == 0) {
            a->dtype = kinds[k].dtype;
        }
    }
    ok = ok && a->dtype >= 0;
    a->rank = 0;
    size_t count = 1;
    for (const char *p = ok ? s + 10 : ""; *p && *p != ')' && a->rank < MAX_RANK;) {
        char *end;
        long long n = strtoll(p, &end, 10);
        if (end == p) {
            break;
        }
        a->shape[a->rank++] = n;
        count *= (size_t)n;
        p = end;
        while (*p == ',' || *p == ' ') {
            p++;
        }
    }
    a->nbytes = count * itemsize(a->dtype, NULL);
    a->data = ok ? malloc(a->nbytes ? a->nbytes : 1) : NULL;
    ok = ok && a->data && fread(a->data, 1, a->nbytes, f) == a->nbytes;
    fclose(f);
    if (!ok) {
        fprintf(stderr, "predict_model: %s is not a .npy file this example reads\n", path);
    }
    return ok ? 0 : -1;
}

static int write_npy(const char *path, int32_t dtype, int32_t rank, const int64_t *shape, const void *data)
{
    const char *descr = NULL;
    size_t size = itemsize(dtype, &descr), count = 1;
    if (size == 0) {
        fprintf(stderr, "predict_model: output dtype %d is not one this example writes\n", dtype);
        return -1;
    }
    char dims[1024] = "";
    for (int32_t d = 0; d < rank; d++) {
        count *= (size_t)shape[d];
        snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%lld,%s", (long long)shape[d],
                 d + 1 < rank ? " " : "");
    }
    char header[1200];
    int n = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, dims);
    while ((10 + n + 1) % 64 != 0) {
        header[n++] = ' ';
    }
    header[n++] = '\n';
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
    int ok = fwrite(head, 1, 10, f) == 10 && fwrite(header, 1, (size_t)n, f) == (size_t)n &&
             (count == 0 || fwrite(data, size, count, f) == count);
    return fclose(f) == 0 && ok ? 0 : -1;
}

typedef struct {
    te_model model;
    int32_t n;
    const int32_t *dtypes, *ranks;
    const int64_t *const *shapes;
    const void *const *data;
    te_model_result result;
    te_status status;
} job;

static void *run(void *arg)
{
    job *j = arg;
    j->status = te_model_predict(j->model, j->n, j->dtypes, j->ranks, j->shapes, j->data, &j->result);
    return NULL;
}

/* Whether two results hold the same outputs, byte for byte. */
static int same(te_model_result a, te_model_result b)
{
    if (te_model_result_count(a) != te_model_result_count(b)) {
        return 0;
    }
    for (int32_t i = 0; i < te_model_result_count(a); i++) {
        int32_t da, db;
        int64_t sa[MAX_RANK], sb[MAX_RANK];
        const void *pa, *pb;
        int32_t ra = te_model_result_output(a, i, &da, sa, MAX_RANK, &pa);
        int32_t rb = te_model_result_output(b, i, &db, sb, MAX_RANK, &pb);
        if (ra != rb || da != db || memcmp(sa, sb, (size_t)ra * sizeof sa[0]) != 0) {
            return 0;
        }
        size_t count = 1;
        for (int32_t d = 0; d < ra; d++) {
            count *= (size_t)sa[d];
        }
        if (memcmp(pa, pb, count * itemsize(da, NULL)) != 0) {
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc - 3 > MAX_INPUTS) {
        fprintf(stderr, "usage: %s MODEL.keras OUTDIR INPUT.npy [INPUT.npy ...]\n", argv[0]);
        return 2;
    }
    te_model model = NULL;
    if (te_model_load(argv[1], &model) != TE_OK) {
        fprintf(stderr, "predict_model: %s: %s\n", argv[1], te_model_last_error());
        return 1;
    }
    int32_t n = argc - 3;
    if (n != te_model_num_inputs(model)) {
        fprintf(stderr, "predict_model: the model takes %d input(s), got %d\n", te_model_num_inputs(model), n);
        te_model_free(model);
        return 2;
    }
    array in[MAX_INPUTS];
    int32_t dtypes[MAX_INPUTS], ranks[MAX_INPUTS];
    const int64_t *shapes[MAX_INPUTS];
    const void *data[MAX_INPUTS];
    for (int32_t k = 0; k < n; k++) {
        if (read_npy(argv[3 + k], &in[k]) != 0) {
            return 1;
        }
        dtypes[k] = in[k].dtype;
        ranks[k] = in[k].rank;
        shapes[k] = in[k].shape;
        data[k] = in[k].data;
        int32_t want_dtype;
        int64_t want[MAX_RANK];
        int32_t rank = te_model_input_spec(model, k, &want_dtype, want, MAX_RANK);
        printf("input %d '%s': rank %d, dtype %d\n", k, te_model_input_name(model, k), rank, want_dtype);
    }

    job first = {model, n, dtypes, ranks, shapes, data, NULL, TE_OK};
    run(&first);
    int status = 1;
    if (first.status != TE_OK) {
        fprintf(stderr, "predict_model: %s\n", te_model_last_error());
        goto done;
    }
    for (int32_t i = 0; i < te_model_result_count(first.result); i++) {
        int32_t dtype;
        int64_t shape[MAX_RANK];
        const void *values;
        int32_t rank = te_model_result_output(first.result, i, &dtype, shape, MAX_RANK, &values);
        char path[4096];
        snprintf(path, sizeof path, "%s/output_%d.npy", argv[2], i);
        if (rank < 0 || rank > MAX_RANK || write_npy(path, dtype, rank, shape, values) != 0) {
            goto done;
        }
        printf("output %d '%s' -> %s\n", i, te_model_output_name(model, i), path);
    }

    job jobs[THREADS];
    pthread_t threads[THREADS];
    for (int t = 0; t < THREADS; t++) {
        jobs[t] = first;
        jobs[t].result = NULL;
        pthread_create(&threads[t], NULL, run, &jobs[t]);
    }
    int agreed = 1;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        agreed = agreed && jobs[t].status == TE_OK && same(first.result, jobs[t].result);
        te_model_result_free(jobs[t].result);
    }
    printf("%d concurrent predictions %s\n", THREADS, agreed ? "agree" : "DISAGREE");
    status = agreed ? 0 : 1;
done:
    te_model_result_free(first.result);
    te_model_free(model);
    for (int32_t k = 0; k < n; k++) {
        free(in[k].data);
    }
    return status;
}
