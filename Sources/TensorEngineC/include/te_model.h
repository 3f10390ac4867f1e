/* keras-swift: Keras models from C, with no Python.
 *
 * Loads a Keras 3 `.keras` file (saved by Python Keras on any backend, or by SwiftKeras),
 * describes its inputs and outputs, and predicts. Link with -lSwiftKerasC (the library
 * SwiftPM builds as the SwiftKerasC product: `swift build --product SwiftKerasC`), not
 * libTensorEngineC: the status and dtype codes are tensor_engine.h's (te_status, te_dtype),
 * which sits beside this header, but no te_* function of it is needed.
 *
 * Errors: every call that can fail returns a te_status; TE_OK is 0, and on failure no
 * handle or output is handed out and te_model_last_error() gives the reason (per thread,
 * valid until the next failing te_model_* call on that thread).
 *
 * Thread-safety: a te_model is immutable once loaded. Any number of threads may call
 * te_model_predict and the te_model_input_* / _output_* functions on the same model at
 * once; te_model_free must not race with other calls on that model. Loading is safe from
 * several threads at once (file reads are serialised inside). A te_model_result belongs
 * to the caller: use it from one thread at a time. */
#ifndef TE_MODEL_H
#define TE_MODEL_H

#include <stdint.h>

#include "tensor_engine.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct te_model_s *te_model;
typedef struct te_model_result_s *te_model_result;

/* This thread's message for its last failed te_model_* call ("" if none). */
const char *te_model_last_error(void);

/* Loads PATH (a .keras file). On success *model is a new model for te_model_free. A layer
 * SwiftKeras lacks, a custom Python layer or a Lambda is TE_ERR_NOT_IMPLEMENTED naming it;
 * a missing or corrupt file is TE_ERR_VALUE. */
te_status te_model_load(const char *path, te_model *model);
void te_model_free(te_model model);

int32_t te_model_num_inputs(te_model model);
int32_t te_model_num_outputs(te_model model);

/* Input i's dtype (a te_dtype) and shape: up to max_rank dimensions are written to shape,
 * -1 for a free dimension (the batch is always free). Returns the rank, or -1 if model is
 * NULL or i is out of range. */
int32_t te_model_input_spec(te_model model, int32_t i, int32_t *dtype, int64_t *shape, int32_t max_rank);
/* Input i's / output i's layer name, owned by the model; NULL if out of range. */
const char *te_model_input_name(te_model model, int32_t i);
const char *te_model_output_name(te_model model, int32_t i);

/* Runs the model on n_inputs row-major buffers (one per model input, in order): input k
 * has dtype dtypes[k] (converted to the input's dtype if they differ), rank ranks[k] and
 * shape shapes[k][0..rank). The buffers are only read during the call. On success
 * *result holds every output, for te_model_result_* and te_model_result_free. */
te_status te_model_predict(te_model model, int32_t n_inputs, const int32_t *dtypes, const int32_t *ranks,
                           const int64_t *const *shapes, const void *const *data, te_model_result *result);

int32_t te_model_result_count(te_model_result result);
/* Output i of a result: its dtype, up to max_rank dims of its shape, and *data pointing at
 * its row-major values (valid until te_model_result_free). Returns the rank, or -1 if i is
 * out of range. */
int32_t te_model_result_output(te_model_result result, int32_t i, int32_t *dtype, int64_t *shape, int32_t max_rank,
                               const void **data);
void te_model_result_free(te_model_result result);

#ifdef __cplusplus
}
#endif

#endif
