/*
 * tensor_engine.h — the stable C ABI of the keras-swift tensor engine.
 *
 * Every function returns a te_status (or a plain value for pure accessors).
 * On failure the message stays readable through te_last_error() until the
 * next failing call on the same thread. No input reachable through this ABI
 * may trap: bad shapes, dtypes, indices and attributes come back as a status.
 *
 * Tensors are opaque, reference-counted handles. Every handle this ABI hands
 * out is owned by the caller and must be released exactly once with
 * te_tensor_release(). Storage is contiguous, row-major, 64-byte aligned.
 *
 * Versioning: TE_ABI_VERSION increases on any incompatible change; a caller
 * compares te_abi_version() with the header it was built against.
 */
#ifndef TENSOR_ENGINE_H
#define TENSOR_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TE_ABI_VERSION 1

typedef enum {
  TE_OK = 0,
  TE_ERR_VALUE = 1,           /* bad shape, bad attribute value, ... */
  TE_ERR_TYPE = 2,            /* unsupported or mismatched dtype */
  TE_ERR_INDEX = 3,           /* index out of range */
  TE_ERR_NOT_IMPLEMENTED = 4, /* known op or feature that is not there yet */
  TE_ERR_INTERNAL = 5
} te_status;

typedef enum {
  TE_BOOL = 0,
  TE_INT8 = 1,
  TE_INT16 = 2,
  TE_INT32 = 3,
  TE_INT64 = 4,
  TE_UINT8 = 5,
  TE_UINT16 = 6,
  TE_UINT32 = 7,
  TE_UINT64 = 8,
  TE_FLOAT16 = 9,
  TE_BFLOAT16 = 10,
  TE_FLOAT32 = 11,
  TE_FLOAT64 = 12,
  TE_FLOAT8_E4M3FN = 13, /* OCP FP8 (ml_dtypes' names), computed in float32 */
  TE_FLOAT8_E5M2 = 14,
  TE_COMPLEX64 = 15, /* numpy layout: (real, imaginary) pairs of float32 */
  TE_COMPLEX128 = 16 /* pairs of float64 */
} te_dtype;

typedef struct te_tensor_s *te_tensor;

typedef enum {
  TE_ATTR_INT = 0,    /* i */
  TE_ATTR_FLOAT = 1,  /* f */
  TE_ATTR_BOOL = 2,   /* i != 0 */
  TE_ATTR_STRING = 3, /* s (NUL-terminated UTF-8) */
  TE_ATTR_INTS = 4,   /* ints[0..n) */
  TE_ATTR_FLOATS = 5  /* floats[0..n) */
} te_attr_kind;

typedef struct {
  const char *name;
  int32_t kind; /* te_attr_kind */
  int64_t i;
  double f;
  const char *s;
  const int64_t *ints;
  const double *floats;
  int64_t n;
} te_attr;

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(te_attr) == 64, "te_attr layout is part of the ABI");
#endif

uint32_t te_abi_version(void);
const char *te_last_error(void);

/* Threads of the engine's worker pool, which runs every parallel kernel, GEMM
 * included (OpenBLAS itself is held to the calling thread and called per block;
 * its LAPACK routines run on one thread). */
void te_set_num_threads(int32_t n);
int32_t te_get_num_threads(void);

/* Tensors. data may be NULL (zero-filled); otherwise nbytes are copied. */
te_status te_tensor_create(int32_t dtype, const int64_t *shape, int32_t ndim,
                           const void *data, int64_t nbytes, te_tensor *out);
/* A tensor over caller-owned memory, without a copy (DLPack, buffers): nbytes at
 * data (64-byte aligned, C-contiguous, row-major), which the engine only reads and
 * which must stay valid and unchanged until release(ctx) runs, once, when the last
 * tensor sharing it is released (on whichever thread releases it; release may be
 * NULL). On failure nothing is kept and release is not called. */
te_status te_tensor_wrap(int32_t dtype, const int64_t *shape, int32_t ndim, const void *data,
                         int64_t nbytes, void (*release)(void *ctx), void *ctx, te_tensor *out);
te_tensor te_tensor_retain(te_tensor t);
void te_tensor_release(te_tensor t);
int32_t te_tensor_dtype(te_tensor t);
int32_t te_tensor_ndim(te_tensor t);
/* Writes min(ndim, cap) dimensions; returns ndim (-1 for a null handle). */
int32_t te_tensor_shape(te_tensor t, int64_t *out, int32_t cap);
int64_t te_tensor_size(te_tensor t);
int64_t te_tensor_nbytes(te_tensor t);
/* Borrowed pointer, valid while t is alive. Treat as read-only: storage may be shared.
 * Called while a trace is active, it makes the trace unreplayable (the caller
 * reads values the graph cannot see): te_trace_end then fails with that cause. */
const void *te_tensor_data(te_tensor t);
int32_t te_dtype_itemsize(int32_t dtype);

/* Ops: look up once by name, call many times. */
te_status te_op_lookup(const char *name, int32_t *op);
int32_t te_op_count(void);
const char *te_op_name(int32_t op); /* NULL when out of range */
/* The op's schema as one JSON object (NULL when out of range), valid for the
 * life of the process: {"name", "doc", "inputs": [{"name", "variadic",
 * "optional", "dtypes"}], "outputs": [names], "attrs": [{"name", "type"
 * (int|float|bool|string|ints|floats|dtype), "required", and "default" or
 * "absent" (what leaving it out means), "choices"?}], "complex", "grad"
 * ("yes" | "no" | "zero" | [differentiable input names])}. te_op_call checks
 * every call against it: an undeclared attribute, a value of the wrong type
 * or outside "choices", a missing required one, a wrong input count or an
 * input dtype outside "dtypes" is an error, never coerced. Thread-safe. */
const char *te_op_schema(int32_t op);
/* On success outputs[0..*n_outputs) are new references the caller releases.
 * On failure no output is handed out: outputs is left as it was and
 * *n_outputs is 0. */
te_status te_op_call(int32_t op, const te_tensor *inputs, int32_t n_inputs,
                     const te_attr *attrs, int32_t n_attrs, te_tensor *outputs,
                     int32_t max_outputs, int32_t *n_outputs);

/* Reverse-mode autodiff. Ops record onto the innermost active tape when an
 * input requires a gradient or was itself recorded. */
te_status te_tape_push(void);
te_status te_tape_pop(void);
int32_t te_tape_depth(void);
te_status te_set_requires_grad(te_tensor t, int32_t flag);
int32_t te_requires_grad(te_tensor t);
/* grads[i] is NULL when sources[i] does not influence target. seed is the
 * output gradient (same shape as target), or NULL for ones_like(target).
 * Gradients flow through the ops recorded on the innermost tape. */
te_status te_gradient(te_tensor target, te_tensor seed, const te_tensor *sources,
                      int32_t n_sources, te_tensor *grads);
/* As te_gradient, but consumes (pops) the innermost tape: its records join the
 * tape beneath it, where the backward pass records too, so the returned
 * gradients can be differentiated again (second derivatives; a JVP as the VJP
 * of a VJP).
 * Needs at least two tapes. */
te_status te_gradient_create_graph(te_tensor target, te_tensor seed, const te_tensor *sources,
                                   int32_t n_sources, te_tensor *grads);

/* Custom gradients. A VJP callback receives the output gradient (borrowed,
 * valid during the call) and writes one new tensor reference or NULL per input
 * into input_grads (the engine takes those references). It returns TE_OK, or
 * an error status after te_set_last_error(). release(ctx) runs once, when the
 * recording is dropped (tape popped) or right away when nothing was recorded;
 * it may run on the thread that pops the tape or ends. */
typedef te_status (*te_vjp_fn)(void *ctx, te_tensor output_grad, te_tensor *input_grads,
                               int32_t n_inputs);
typedef void (*te_release_fn)(void *ctx);
/* *result: a new handle sharing output's storage whose gradient flows to
 * inputs through vjp (when a tape is recording and an input is tracked;
 * non-float outputs are never recorded). Pair with a forward run untracked. */
te_status te_record_custom(te_tensor output, const te_tensor *inputs, int32_t n_inputs,
                           te_vjp_fn vjp, void *ctx, te_release_fn release,
                           te_tensor *result);
/* Sets this thread's te_last_error() text (for callbacks reporting failure). */
void te_set_last_error(const char *message);

/* Programs (compiled steps). A trace records, on the calling thread only, every
 * successful te_op_call and every tape step (te_tape_push/pop,
 * te_set_requires_grad, te_gradient*) while the calls still run eagerly, so the
 * traced call is itself a correct first step. A tensor used during the trace
 * that no recorded call produced and that was not declared with
 * te_trace_input becomes a constant of the graph (held by reference). Graphs
 * are specialised on their inputs' dtypes and shapes. docs/graph-format.md
 * describes the design and the file format.
 *
 * Thread-safety: te_trace_* act on the calling thread's trace (at most one per
 * thread; other threads are not recorded). A graph is immutable: any thread
 * may run, save or query it; runs of one graph are serialised internally. */
typedef struct te_graph_s *te_graph;

/* Starts a trace on this thread; an error if one is already active. */
te_status te_trace_begin(void);
/* Declares t as the next graph input. t must not have been used in the trace
 * yet. Its te_requires_grad flag is part of the signature: te_graph_run gives
 * the input the same flag (on a new handle, the caller's tensor is untouched). */
te_status te_trace_input(te_tensor t);
/* Ends the trace and, on success, hands out *graph (release with
 * te_graph_release) computing outputs[0..n) from the declared inputs, with
 * constants folded, common subexpressions merged and dead code removed
 * (docs/graph-format.md, "Passes"). The trace ends whether or not this
 * succeeds; on failure *graph is NULL. TE_ERR_NOT_IMPLEMENTED means the trace cannot be replayed
 * (a custom gradient, a tape pushed before the trace was popped or
 * differentiated, a tape left pushed, a graph run during the trace); the
 * message names the cause. */
te_status te_trace_end(const te_tensor *outputs, int32_t n, te_graph *graph);
/* Ends this thread's trace, if any, discarding it. */
void te_trace_abort(void);
/* 1 while a trace is active on this thread, else 0. */
int32_t te_trace_active(void);
/* Marks this thread's trace (if any) as not replayable, for reason: te_trace_end
 * then fails with it. For callers that see what the trace cannot (a host-side
 * branch, an exception inside a traced branch). */
void te_trace_unreplayable(const char *reason);

/* Control flow while tracing (docs/graph-format.md, "Control flow"). A cond
 * records every branch (each runs for real, in order 0, 1, ...): begin it on a
 * scalar bool or integer selector (branch k = its value clamped to the
 * branches; false, true are 0, 1), which also starts branch 0;
 * te_trace_cond_next ends a branch and starts the next; te_trace_cond_end
 * takes every branch's results, row-major (n_branches x n_results: the same
 * dtypes and shapes in each row) and hands out n_results new tensors holding
 * the taken branch's results. Values a branch computes are visible only in
 * it: using one after the cond makes the trace unreplayable.
 * *recording / *recorded are 0 when the trace can no longer be replayed:
 * then te_trace_cond_begin opened nothing (run the taken branch alone), and
 * te_trace_cond_end handed out nothing (use the taken branch's results). */
te_status te_trace_cond_begin(te_tensor selector, int32_t n_branches, int32_t *taken, int32_t *recording);
te_status te_trace_cond_next(void);
te_status te_trace_cond_end(const te_tensor *results, int32_t n_branches, int32_t n_results,
                            te_tensor *outputs, int32_t *recorded);
/* A while loop carrying initial[0..n): te_trace_while_begin hands out n
 * parameters (new tensors on the initial values) for the condition and body to
 * read, and starts the condition's block; te_trace_while_body ends it with the
 * condition's value pred (one bool or real value; *holds: whether it is
 * non-zero) and starts the body's; te_trace_while_end ends the body with the
 * next state results[0..n) (the carried dtypes and shapes), runs the remaining
 * iterations itself from the recorded blocks (max_iterations in all; < 0: no
 * limit) and hands out the final state as n new tensors. *recording /
 * *recorded 0: the loop is not recorded (the trace can no longer be replayed);
 * finish it eagerly (te_trace_while_begin opened nothing then). */
te_status te_trace_while_begin(const te_tensor *initial, int32_t n, te_tensor *params, int32_t *recording);
te_status te_trace_while_body(te_tensor pred, int32_t *holds);
te_status te_trace_while_end(const te_tensor *results, int32_t n, int64_t max_iterations,
                             te_tensor *outputs, int32_t *recorded);
/* Drops the innermost cond or loop being recorded (after an exception in it):
 * the values it defined can no longer be used in the trace. */
te_status te_trace_block_abort(void);

/* Runs the graph on inputs[0..n_inputs) (dtypes and shapes as traced). On
 * success outputs[0..*n_outputs) are new references the caller releases; on
 * failure none is handed out and *n_outputs is 0. Tapes the graph pushes are
 * popped again, also on failure. */
te_status te_graph_run(te_graph graph, const te_tensor *inputs, int32_t n_inputs,
                       te_tensor *outputs, int32_t max_outputs, int32_t *n_outputs);
/* te_graph_run that takes over the caller's reference to each inputs[i] with
 * donate[i] != 0 (donate may be NULL: none). Once n_inputs >= 0 and inputs is
 * non-NULL (or n_inputs is 0), every such non-NULL handle is the engine's,
 * whatever the status: the caller must not use or release it again (a handle
 * flagged twice gives up two references). Where the
 * engine then holds the only reference to a donated tensor and its storage
 * (no other handle, view, reshape or DLPack export shares it, and it wraps no
 * foreign memory), an op the graph runs after that input's last use may write
 * its output into the input's buffer (optimizer updates write a variable's new
 * value over its old one; elementwise ops over a dying operand). Undonated
 * inputs are only read, as by te_graph_run. Intermediates are reused the same
 * way, whichever entry point runs the graph. */
te_status te_graph_run_donating(te_graph graph, const te_tensor *inputs, int32_t n_inputs,
                                const uint8_t *donate, te_tensor *outputs, int32_t max_outputs,
                                int32_t *n_outputs);
/* Writes the graph (ops by name, attributes, constants' bytes) to path. */
te_status te_graph_save(te_graph graph, const char *path);
/* Reads a graph written by te_graph_save. An unknown version or op, or a
 * truncated or corrupt file, is TE_ERR_VALUE and *graph is NULL. */
te_status te_graph_load(const char *path, te_graph *graph);
void te_graph_release(te_graph graph);
/* Counts; -1 for a null handle. */
int32_t te_graph_num_inputs(te_graph graph);
int32_t te_graph_num_outputs(te_graph graph);
int32_t te_graph_num_nodes(te_graph graph);
int32_t te_graph_num_constants(te_graph graph);
/* Input (or output) i of the graph as traced: its te_dtype into *dtype (when
 * not NULL) and its first min(cap, rank) dims into shape (when not NULL).
 * Returns the rank, or -1 for a null handle or an index out of range. A C
 * program feeding a loaded graph sizes its inputs from these. */
int32_t te_graph_input_spec(te_graph graph, int32_t i, int32_t *dtype, int64_t *shape, int32_t cap);
int32_t te_graph_output_spec(te_graph graph, int32_t i, int32_t *dtype, int64_t *shape, int32_t cap);
/* The graph described as JSON (UTF-8; docs/graph-format.md, "Describing a
 * program"): inputs, outputs and constants with dtype and shape, and the nodes
 * in order with op name, typed attributes and value ids. *len receives the
 * text's length in bytes, without the terminating NUL. With buf NULL this only
 * measures; otherwise the text and a NUL are copied into buf[0..cap), the
 * caller's memory, and a cap of *len or less is TE_ERR_VALUE (nothing written). */
te_status te_graph_json(te_graph graph, char *buf, size_t cap, size_t *len);
/* Constant i (0 <= i < te_graph_num_constants, in the JSON's order) as a new
 * reference in *out, which the caller releases with te_tensor_release. It
 * shares the graph's storage: treat it as read-only. */
te_status te_graph_constant(te_graph graph, int32_t i, te_tensor *out);

#ifdef __cplusplus
}
#endif
#endif
