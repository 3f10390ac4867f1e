/* Per-call cost of a tiny op through the C ABI (4-element float32 add and negative),
 * the figure the tracing hook must not move when no trace is active.
 * Build: cc -O2 bench/op_call_overhead.c -ISources/TensorEngineC/include \
 *          -L<build>/release -lTensorEngineC -Wl,-rpath,<build>/release
 * Prints the best of several rounds in ns per call of thread CPU time (less disturbed by a
 * loaded machine than wall time). argv[1]: calls per round (default 10^6), argv[2]: "add" or
 * "negative" to time one op; under
 * `valgrind --tool=callgrind`, two call counts give instructions per call. With -DTRACED (an engine that has
 * te_trace_begin) it also times the same call while a trace records it. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "tensor_engine.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double bench(int32_t op, te_tensor *ins, int32_t n_in, int calls) {
  double best = 1e30;
  for (int round = 0; round < 7; round++) {
    double t0 = now();
    for (int i = 0; i < calls; i++) {
      te_tensor out = NULL;
      int32_t n = 0;
      if (te_op_call(op, ins, n_in, NULL, 0, &out, 1, &n) != TE_OK) {
        fprintf(stderr, "op failed: %s\n", te_last_error());
        return -1;
      }
      te_tensor_release(out);
    }
    double ns = (now() - t0) / calls * 1e9;
    if (ns < best) best = ns;
  }
  return best;
}

int main(int argc, char **argv) {
  float v[4] = {1, 2, 3, 4};
  int64_t shape[1] = {4};
  te_tensor a, b;
  te_tensor_create(TE_FLOAT32, shape, 1, v, sizeof v, &a);
  te_tensor_create(TE_FLOAT32, shape, 1, v, sizeof v, &b);
  te_set_num_threads(1);
  int32_t add, neg;
  te_op_lookup("add", &add);
  te_op_lookup("negative", &neg);
  te_tensor ab[2] = {a, b};
  int calls = argc > 1 ? atoi(argv[1]) : 1000000;
  const char *only = argc > 2 ? argv[2] : "";  /* "add" or "negative": time that op alone */
  if (only[0] != 'n') printf("add(4 x f32):      %.1f ns/call\n", bench(add, ab, 2, calls));
  if (only[0] != 'a') printf("negative(4 x f32): %.1f ns/call\n", bench(neg, ab, 1, calls));
#ifdef TRACED
  /* Recording: each call appends a node and the trace holds its output. */
  double best = 1e30;
  for (int round = 0; round < 5; round++) {
    te_trace_begin();
    double ns = bench(add, ab, 2, 20000);
    te_trace_abort();
    if (ns < best) best = ns;
  }
  printf("add while tracing: %.1f ns/call\n", best);
#endif
  te_tensor_release(a);
  te_tensor_release(b);
  return 0;
}
