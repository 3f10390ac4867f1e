"""The optimizer mixin (``BackendOptimizer``).

For a backend other than tensorflow, torch and jax, Keras's
``keras/src/optimizers/optimizer.py`` builds every optimizer on
``BaseOptimizer`` written with ``keras.ops``; the hook makes it take this
mixin instead.

Keras's Adam (and AdamW, which shares its ``update_step``) costs a dozen small
ops per variable per step; the engine's ``adam_update`` does the same update in
one pass. Anything else — other optimizers, amsgrad, subclasses that override
``update_step``, non-float32/64 variables, symbolic hyperparameters — keeps
Keras's generic path.
"""

import numbers

from keras.src.optimizers import base_optimizer
from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_numpy
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.engine import _C
from keras_swift.src.engine import op

_FUSED_DTYPES = ("float32", "float64")


def _adam_update_step():
    from keras.src.optimizers.adam import Adam

    return Adam.update_step


class BackendOptimizer(base_optimizer.BaseOptimizer):
    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not self._can_fuse_adam():
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        b1, b2 = float(self.beta_1), float(self.beta_2)
        attrs = {"beta1": b1, "beta2": b2, "epsilon": float(self.epsilon)}
        alpha_t = ()
        if _C.trace_active():
            # A compiled step: alpha changes every step, so it is computed by recorded ops
            # and fed to the update as a tensor (float64, as the host computes it below).
            # `iterations` is a tensor, not a Variable, under gradient accumulation.
            step = op("add", cast(convert_to_tensor(self.iterations), "float64"), convert_to_tensor(1.0, "float64"))
            one = convert_to_tensor(1.0, "float64")

            def decay(b):
                return op("subtract", one, op("power", convert_to_tensor(b, "float64"), step))

            lr = cast(convert_to_tensor(learning_rate), "float64")
            alpha_t = (op("divide", op("multiply", lr, op("sqrt", decay(b2))), decay(b1)),)
        else:
            step = float(convert_to_numpy(self.iterations)) + 1.0
            lr = float(convert_to_numpy(learning_rate))
            attrs["alpha"] = lr * (1.0 - b2**step) ** 0.5 / (1.0 - b1**step)
        for grad, var in zip(grads, trainable_variables):
            if var.dtype not in _FUSED_DTYPES:
                self.update_step(grad, var, learning_rate)
                continue
            grad = convert_to_tensor(grad)
            if grad.dtype != var.dtype:
                grad = cast(grad, var.dtype)
            index = self._get_variable_index(var)
            m, v = self._momentums[index], self._velocities[index]
            new_var, new_m, new_v = op(
                "adam_update", var.value, grad, m.value, v.value, *alpha_t, **attrs
            )
            self.assign(m, new_m)
            self.assign(v, new_v)
            self.assign(var, new_var)

    def _can_fuse_adam(self):
        return (
            type(self).update_step is _adam_update_step()
            and not self.amsgrad
            and all(
                isinstance(h, numbers.Real) for h in (self.beta_1, self.beta_2, self.epsilon)
            )
        )
