"""Keras Variable backed by an engine tensor.

Keras's common ``Variable`` (``keras/src/backend/common/variables.py``) does
the validation, naming, stateless-scope and autocast handling; a backend
supplies ``_initialize``, ``_direct_assign``, ``_convert_to_tensor`` and
``__array__``.

The stored tensor of a trainable variable is a gradient leaf
(``requires_grad``); the trainer asks the tape for gradients with respect to
these leaves. Assignments swap in a fresh, detached tensor, so they are never
recorded and never alias the previous value.
"""

from keras.src.backend.common.variables import Variable as KerasVariable
from keras_swift.src import control_flow
from keras_swift.src import distribution_lib
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.engine import op


def detached_leaf(value, requires_grad):
    # stop_gradient hands back a new, unrecorded tensor handle (storage is
    # shared), so flagging it never touches a tensor someone else holds.
    leaf = op("stop_gradient", value)
    leaf.requires_grad = bool(requires_grad)
    return leaf


class Variable(KerasVariable):
    def _initialize(self, value):
        value = convert_to_tensor(value, dtype=self._dtype)
        # A distribution whose layout would shard this variable raises here.
        distribution_lib.check_variable(self, value)
        self._value = detached_leaf(value, self.trainable)

    def _direct_assign(self, value):
        value = convert_to_tensor(value, dtype=self._dtype)
        logs = control_flow.ASSIGN_LOGS
        if logs:
            # A cond branch or loop body being traced: it yields the variable's new value.
            logs[-1].setdefault(id(self), (self, self._value))
        self._value = detached_leaf(value, self.trainable)

    def _take_value(self, leaf):
        """Store ``leaf``, already what ``_direct_assign`` would store (a detached tensor
        of this dtype flagged as this variable's leaf): a compiled step's new value."""
        if leaf.requires_grad != self._trainable:
            leaf.requires_grad = self._trainable
        self._value = leaf

    def _convert_to_tensor(self, value, dtype=None):
        return convert_to_tensor(value, dtype=dtype)

    def __array__(self, dtype=None, copy=None):
        return self.value.__array__(dtype, copy)

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        if getattr(self, "_value", None) is not None:
            self._value.requires_grad = self._trainable

    def __eq__(self, other):
        try:
            return super().__eq__(other)
        except Exception:
            return False
