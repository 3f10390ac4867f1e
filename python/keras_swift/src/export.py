"""SavedModel export is not available for the swift backend.

Keras's ``export_saved_model`` converts the model through TensorFlow, JAX or
PyTorch tracing; the Swift engine has no graph to hand over yet.
"""

_UNSUPPORTED = (
    "`export_saved_model` only currently supports the tensorflow, jax and torch "
    "backends. The swift backend cannot export a SavedModel: save the model "
    "with `model.save(...)` (.keras) and export it from one of those backends."
)


class SavedModelExportArchive:
    def track(self, resource):
        raise NotImplementedError(_UNSUPPORTED)

    def add_endpoint(self, name, fn, input_signature=None, **kwargs):
        raise NotImplementedError(_UNSUPPORTED)

    def track_and_add_endpoint(self, name, resource, input_signature, **kwargs):
        raise NotImplementedError(_UNSUPPORTED)
