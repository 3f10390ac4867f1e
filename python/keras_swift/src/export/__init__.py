"""Model export for the swift backend.

Every format starts from one trace of the inference function into an engine graph and
one walk of that graph (``graph``); each target lowers the engine's ops with its own
table: ``onnx`` (``format="onnx"``, needs ``onnx``) and ``saved_model``
(``format="tf_saved_model"`` and ``keras.export.ExportArchive``, needs TensorFlow).
``keras_swift_hook`` routes Keras's ``export_onnx`` and its SavedModel archive here.
"""

from keras_swift.src.export.graph import TRACE_BATCH, TRACE_DYNAMIC
from keras_swift.src.export.onnx import DEFAULT_OPSET, MIN_OPSET, export_onnx
from keras_swift.src.export.saved_model import SavedModelExportArchive

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "TRACE_BATCH",
    "TRACE_DYNAMIC",
    "SavedModelExportArchive",
    "export_onnx",
]
