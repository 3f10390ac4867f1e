/* Per-call cost of a tiny op through the C ABI (4-element float32 add and negative),
 * the figure the tracing hook must not move when no trace is active.
 * Build: cc -O2 bench/op_call_overhead.c -ISources/TensorEngineC/include \
 *          -L<build>/release -lTensorEngineC -Wl,-rpath,<build>/release
 * Prints the best of several rounds in ns per call. */
#include <stdio.h>
#include <time.h>
#include "tensor_engine.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
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

int main(void) {
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
  int calls = 1000000;
  printf("add(4 x f32):      %.1f ns/call\n", bench(add, ab, 2, calls));
  printf("negative(4 x f32): %.1f ns/call\n", bench(neg, ab, 1, calls));
  te_tensor_release(a);
  te_tensor_release(b);
  return 0;
}
