#!/usr/bin/env python3
"""``fit`` of ``bench/steps.py``'s MLP (Dense 784-512-512-10, batch 128) with an optimizer
other than Adam: SGD with momentum and RMSprop update each variable through Keras's generic
chain of elementwise ops, which compiled steps run as ``fused_elementwise`` nodes (Adam has
its own ``adam_update`` op). One warm-up ``fit`` of a few batches, then ``--repeats`` epochs
of ``--steps`` batches, each timed; prints the median epoch and samples/s per optimizer.

    KERAS_BACKEND=swift python bench/optimizer_fit.py [--optimizers rmsprop,sgd-momentum]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import activate_swift, epoch_timer  # noqa: E402
from steps import build, make_data  # noqa: E402

OPTIMIZERS = {
    "rmsprop": lambda keras: keras.optimizers.RMSprop(0.001),
    "sgd-momentum": lambda keras: keras.optimizers.SGD(0.01, momentum=0.9),
    "adam": lambda keras: keras.optimizers.Adam(0.001),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizers", default="rmsprop,sgd-momentum")
    parser.add_argument("--steps", type=int, default=100, help="batches per epoch (100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs (5)")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    activate_swift()
    import keras

    batch = 128
    x, y = make_data("mlp", args.steps * batch, args.seed)
    for name in args.optimizers.split(","):
        keras.utils.set_random_seed(args.seed)
        model = build("mlp")
        model.compile(optimizer=OPTIMIZERS[name](keras), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        warm = args.warmup_steps * batch
        model.fit(x[:warm], y[:warm], batch_size=batch, epochs=1, verbose=0)
        timer = epoch_timer(keras)
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=args.repeats, shuffle=False, callbacks=[timer], verbose=0)
        total = time.perf_counter() - start
        epoch = statistics.median(timer.times)
        print(f"{name}: median epoch {epoch * 1000:.0f} ms ({args.steps} batches), "
              f"{args.steps * batch / epoch:.0f} samples/s; epochs {[round(t * 1000) for t in timer.times]} ms, "
              f"total {total:.1f} s", flush=True)


if __name__ == "__main__":
    main()
