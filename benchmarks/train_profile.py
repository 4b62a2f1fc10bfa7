"""Where the training step's time goes: forward vs backward, op time by type, the expert bank alone.

Used by ``benchmarks/train.py`` on its default step (a ``train.Step``: ``model``, ``loss_fn``,
``train_step`` built from the project's Trainer).
"""

from __future__ import annotations

import os
import tempfile
import time

from machine import median


def profile(step, batch, width: int, repeats: int) -> dict:
    """Median ms of the parts of ``step`` on one in-memory ``batch``: where the time goes.

    ``forward`` and ``forward_backward`` are the core model's loss and gradients, compiled like
    the step (``jit_compile``); ``step`` is one training step per call (``Trainer.train_step``,
    optimizer included);
    ``whole_step_one_function`` is forward, backward and Adam in ONE compiled function (the
    trainer compiles the gradients and the update as two); ``experts_forward_backward``
    is the expert bank alone on a ``(batch, width)`` input.
    """
    import keras
    import tensorflow as tf

    from mmoe.layers import ExpertBank

    spec, model = step.spec, step.model
    jit = spec.training.jit_compile

    def gradients(b):
        with tf.GradientTape() as tape:
            loss = step.loss_of(*b)
        return tape.gradient(loss, model.trainable_variables)

    forward = tf.function(lambda b: step.loss_of(*b), jit_compile=jit)
    forward_backward = tf.function(gradients, jit_compile=jit)
    result = {
        "forward_ms": _time_ms(lambda: forward(batch), repeats),
        "forward_backward_ms": _time_ms(lambda: forward_backward(batch), repeats),
        "step_ms": _time_ms(lambda: step(batch), repeats),
    }
    whole = step.whole_step()
    result["whole_step_one_function_ms"] = _time_ms(lambda: whole(batch), repeats)
    size = int(next(iter(batch[1].values())).shape[0])
    bank = ExpertBank(spec.model.num_experts, spec.model.expert_units, fused=spec.model.fused_experts)
    bank.build((None, width))
    x = tf.random.normal((size, width))

    def expert_gradients(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = keras.ops.sum(bank(inputs))  # (batch, E, units) summed
        return tape.gradient(out, [inputs, *bank.trainable_variables])

    experts = tf.function(expert_gradients, jit_compile=jit)
    result["experts_forward_backward_ms"] = _time_ms(lambda: experts(x), repeats)
    return result


EXPERT_SIZES = {  # name: (batch, input width, experts, units)
    "reference": (1024, 132, 8, (256, 128)),
    "clicklog": (512, 60, 8, (64,)),  # feature_specs/clicklog.yaml's experts
}


def expert_banks(rounds: int, repeats: int = 5) -> dict:
    """Forward + backward ms of the expert bank alone, fused vs naive, at two sizes.

    Both forms get the same weights and input; medians over interleaved rounds, graph mode.
    """
    import tensorflow as tf

    from mmoe.layers import ExpertBank

    functions, times = {}, {}
    for name, (batch, width, experts, units) in EXPERT_SIZES.items():
        x = tf.random.normal((batch, width))
        fused, naive = ExpertBank(experts, units), ExpertBank(experts, units, fused=False)
        fused.build((None, width))
        naive.build((None, width))
        naive.set_expert_weights(fused.expert_weights())
        for form, bank in (("fused", fused), ("naive", naive)):
            functions[(name, form)] = (tf.function(_bank_gradients(bank)), x)
    for _ in range(rounds):
        for key, (function, x) in functions.items():
            times.setdefault(key, []).append(_time_ms(lambda: function(x), repeats))
    result = {}
    for name in EXPERT_SIZES:
        fused, naive = median(times[(name, "fused")]), median(times[(name, "naive")])
        result[name] = {"fused_ms": round(fused, 2), "naive_ms": round(naive, 2), "naive_over_fused": round(naive / fused, 2)}
    return result


def _bank_gradients(bank):
    import keras
    import tensorflow as tf

    def gradients(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = keras.ops.sum(keras.ops.square(bank(inputs)))  # (batch, E, units) -> scalar
        return tape.gradient(out, [inputs, *bank.trainable_variables])

    return gradients


def op_profile(step, batch, steps: int = 5, top: int = 10) -> dict:
    """Op time per step by op type (all threads summed), from a TensorFlow profiler trace.

    Returns ``{"op_ms_per_step": total, "ops": {type: [ms, share]}}``; the mixture's einsum is
    listed apart from other einsums. Empty when the trace cannot be read.
    """
    import collections
    import glob
    import tensorflow as tf

    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        return {}
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            step(batch)
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as handle:
            space.ParseFromString(handle.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or "Process" in name:  # executor bookkeeping, not ops
                    continue
                kind = name.rsplit(":", 1)[-1]
                totals[f"{kind} (gate mixture)" if "/einsum" in name else kind] += event.duration_ps / 1e9 / steps
    total = sum(totals.values())
    return {"op_ms_per_step": round(total, 1),
            "ops": {k: [round(v, 1), round(v / total, 3)] for k, v in totals.most_common(top)}}


def _time_ms(function, repeats: int) -> float:
    import tensorflow as tf

    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, function())  # trace / warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, function())
        times.append(time.perf_counter() - start)
    return round(median(times) * 1e3, 2)
