"""Sparse dispatch: each example's row goes only to the experts its gate chose, with static shapes.

GShard/Switch-style routing (Lepikhin et al. 2021, Fedus et al. 2022). For a batch of B rows and
k choices each, every expert has a buffer of C rows (its capacity); assignment ``(row, slot)``
takes the next free place in its expert's buffer, first choices of every row before second
choices. Rows are gathered into an ``(E, C, d)`` tensor, the experts run as one batched product
per layer on their own buffers only (:meth:`mmoe.layers.experts.ExpertBank.buffer_outputs`,
``k / capacity_factor`` of the dense FLOPs), and each row's outputs are gathered back and weighted.

Overflow: an assignment past its expert's capacity is dropped; the row's remaining chosen experts
share its weight (renormalized); a row whose every choice was dropped gets a zero mixture. In
training the capacity is ``ceil(capacity_factor * B * k / E)`` (at most B), a static number for a
static batch, so the step compiles under XLA and every tf.distribute replica has the same shapes.
At inference (``capacity=None``) the capacity is the largest expert's load in the batch, so no row
is ever dropped and a row's output never depends on the rows batched with it; that shape depends
on the data, which plain graph mode (the SavedModel) runs but XLA does not compile.

Everything is ``keras.ops``; gradients flow through the gathers (scatter-adds backward) into the
experts' kernels and through the weights into the gate.
"""

from __future__ import annotations

import math

from keras import ops


def train_capacity(batch, num_experts: int, k: float, capacity_factor: float):
    """Rows per expert buffer in training: ``min(B, ceil(capacity_factor * B * k / E))``.

    Args:
        batch: int or scalar int tensor. Rows in the batch B.
        k: the choices each row sends this bank (a mean where gates weigh several banks).
        capacity_factor: float > 0. 1.0 is exactly the average load; ``E / k`` or more never drops.
    """
    if isinstance(batch, int):
        return min(batch, max(1, math.ceil(capacity_factor * batch * k / num_experts)))
    wanted = ops.cast(ops.ceil(capacity_factor * k * ops.cast(batch, "float32") / num_experts), "int32")
    return ops.minimum(ops.cast(batch, "int32"), ops.maximum(wanted, 1))


def choices(weights, k: int):
    """Each row's k largest gate weights and their experts: ``(values (B, k), experts (B, k) int32)``."""
    values, experts = ops.top_k(weights, k)
    return values, ops.cast(experts, "int32")


def route(experts, num_experts: int, capacity=None):
    """Where each assignment of a row to an expert lands in that expert's buffer.

    Args:
        experts: ``(B, n)`` int32: row ``b``'s ``n`` chosen experts (several gates' choices side by
            side share one dispatch), or -1 where that choice is not in this bank (it takes no
            place). Column 0 of every row is placed before column 1, and so on.
        num_experts: int. E.
        capacity: int or scalar tensor: rows per expert buffer. None: the largest load, so
            nothing is dropped.

    Returns:
        ``(slots, keep, capacity)``: ``slots`` ``(B, n)`` int32, the place ``expert * C + position``
        of each assignment in the flattened ``(E * C)`` buffers, or ``E * C`` where it was dropped;
        ``keep`` ``(B, n)`` bool; ``capacity`` C.
    """
    batch, n = ops.shape(experts)[0], experts.shape[-1]
    position, loads = _positions(ops.reshape(ops.transpose(experts), (-1,)), num_experts)  # column-major
    position = ops.transpose(ops.reshape(position, (n, batch)))  # (B, n)
    if capacity is None:
        capacity = ops.max(loads)  # the largest expert load: nothing dropped
    keep = ops.logical_and(position < capacity, experts >= 0)  # -1 takes no place
    slots = ops.where(keep, experts * capacity + position, num_experts * capacity)
    return slots, keep, capacity


def _positions(flat, num_experts: int):
    """Each assignment's place among the earlier assignments to the same expert, by sorting.

    Args:
        flat: ``(N,)`` int32 experts in placement order, -1 for "no expert".

    Returns:
        ``(positions (N,), loads (E,))``: ``positions[i]`` counts the ``j < i`` with
        ``flat[j] == flat[i]``; ``loads[e]`` the assignments to expert e.

    A stable sort by expert puts each expert's assignments side by side in placement order, so
    an assignment's place is its rank in the sorted order minus its expert's first rank. A
    running count over a one-hot ``(N, E)`` gives the same numbers, but XLA lowers a cumulative
    sum to a windowed reduction whose compile time and work grow with N squared (a 2-level PLE
    step compiled in 140 s, against 17 s this way).
    """
    total = ops.shape(flat)[0]
    key = ops.where(flat < 0, num_experts, flat)  # "no expert" sorts last, as expert E
    order = ops.argsort(key * total + ops.arange(total, dtype="int32"))  # unique keys: stable
    counts = ops.sum(ops.one_hot(key, num_experts + 1, dtype="int32"), axis=0)  # (E + 1,)
    first = ops.cumsum(counts) - counts  # each expert's first rank in the sorted order
    rank = ops.arange(total, dtype="int32") - ops.take(first, ops.take(key, order))
    return ops.take(rank, ops.argsort(order)), counts[:num_experts]


def gather_rows(inputs, slots, num_experts: int, capacity):
    """The ``(E, C, d)`` expert buffers: row ``b`` of ``inputs`` at ``[e, p]`` where ``slots[b, j] == e * C + p``.

    Unfilled places hold row 0; nothing reads what an expert computes there.
    """
    batch, n = ops.shape(slots)[0], slots.shape[-1]
    rows = ops.reshape(ops.repeat(ops.expand_dims(ops.arange(batch, dtype="int32"), 1), n, axis=1), (-1,))
    size = num_experts * capacity
    # each kept place is written once; the dropped assignments all land on the extra place `size`
    row_of_place = ops.scatter(ops.reshape(slots, (-1, 1)), rows, ops.stack([size + 1]))[:size]
    buffers = ops.take(inputs, row_of_place, axis=0)  # (E*C, d)
    return ops.reshape(buffers, (num_experts, capacity, inputs.shape[-1]))


def combine(table, values, slots, keep):
    """Each row's weighted sum of its kept experts' outputs, weights renormalized over the kept ones.

    Args:
        table: ``(S + 1, units)``: every bank's flattened ``(E * C, units)`` outputs one after the
            other, then a zero row (:func:`output_table`).
        values: ``(B, k)`` the chosen weights; ``slots`` ``(B, k)``: their rows of ``table`` (the
            zero row where dropped); ``keep`` ``(B, k)`` bool.

    Returns:
        ``(B, units)``; zeros for a row whose every choice was dropped.
    """
    picked = ops.take(table, slots, axis=0)  # (B, k, units); a dropped assignment reads the zero row
    kept = values * ops.cast(keep, values.dtype)
    total = ops.sum(kept, axis=-1, keepdims=True)
    kept = kept / ops.where(total > 0, total, ops.ones_like(total))
    return ops.sum(ops.expand_dims(kept, -1) * picked, axis=1)


def output_table(outputs: list):
    """``(sum of E * C, + 1, units)``: the banks' ``(E, C, units)`` outputs flattened, then a zero row."""
    units = outputs[0].shape[-1]
    rows = [ops.reshape(o, (-1, units)) for o in outputs]
    return ops.concatenate(rows + [ops.zeros((1, units), outputs[0].dtype)], axis=0)


def _in_bank(experts, offset: int, size: int):
    """``experts`` ``(B, k)`` indices over a gate's pooled banks as indices into the bank at
    ``offset`` with ``size`` experts, -1 where a choice lies in another bank."""
    inside = ops.logical_and(experts >= offset, experts < offset + size)
    return ops.where(inside, experts - offset, -ops.ones_like(experts))


def pooled_mixtures(gate_weights, gate_banks, banks, bank_inputs, ks, capacity_factor: float | None):
    """Mixtures of gates that each weigh several expert banks, every row computed only by the
    experts its gates chose (CGC and PLE: a task's own experts followed by the shared ones).

    All choices that fall in one bank share one dispatch: one gather and one batched product per
    expert layer per bank. A bank's training capacity is for the load uniform gates would send
    it: ``sum over its gates of k * E_bank / E_gate`` choices a row (:func:`train_capacity`).

    Args:
        gate_weights: list of G ``(B, E_g)`` weights; gate g weighs the experts of the banks
            ``gate_banks[g]`` in that order (``E_g`` their total), and its ``ks[g]`` largest
            weights are each row's choices.
        gate_banks: G lists of indices into ``banks``.
        banks: list of :class:`mmoe.layers.experts.ExpertBank`, all with the same output width.
        bank_inputs: one ``(B, d_bank)`` input per bank.
        ks: G ints, each at most ``E_g``.
        capacity_factor: float: training capacity; None: nothing dropped (inference).

    Returns:
        ``(mixtures, keep)``: G ``(B, units)`` tensors; G ``(B, k_g)`` bool, the kept choices.
    """
    picked = [choices(w, k) for w, k in zip(gate_weights, ks)]
    claims = [[] for _ in banks]  # per bank: (gate, (B, k_g) local experts or -1)
    for g, (_, experts) in enumerate(picked):
        offset = 0
        for b in gate_banks[g]:
            claims[b].append((g, _in_bank(experts, offset, banks[b].num_experts)))
            offset += banks[b].num_experts
    sizes = [sum(banks[b].num_experts for b in names) for names in gate_banks]
    outputs, routes, base = [], [], 0
    for b, bank in enumerate(banks):
        if not claims[b]:
            routes.append(None)
            continue
        local = ops.concatenate([e for _, e in claims[b]], axis=1)
        capacity = None
        if capacity_factor is not None:
            load = sum(ks[g] * bank.num_experts / sizes[g] for g, _ in claims[b])
            capacity = train_capacity(ops.shape(bank_inputs[b])[0], bank.num_experts, load, capacity_factor)
        slots, keep, capacity = route(local, bank.num_experts, capacity)
        outputs.append(bank.buffer_outputs(gather_rows(bank_inputs[b], slots, bank.num_experts, capacity)))
        routes.append((slots + base, keep))
        base = base + bank.num_experts * capacity
    table = output_table(outputs)
    mixtures, kept = [], []
    for g, (values, experts) in enumerate(picked):
        slots = ops.full(ops.shape(experts), base, dtype="int32")  # the zero row
        keep = ops.zeros(ops.shape(experts), dtype="bool")
        for b in gate_banks[g]:
            columns = [i for i, (h, _) in enumerate(claims[b]) if h == g][0]
            start = sum(ks[h] for h, _ in claims[b][:columns])
            bank_slots, bank_keep = routes[b]
            mine, mine_kept = bank_slots[:, start:start + ks[g]], bank_keep[:, start:start + ks[g]]
            slots = ops.where(mine_kept, mine, slots)
            keep = ops.logical_or(keep, mine_kept)
        mixtures.append(combine(table, values, slots, keep))
        kept.append(keep)
    return mixtures, kept


def dispatched_mixtures(gate_weights, inputs, bank, k: int, capacity_factor: float | None):
    """Each gate's mixture of ``bank`` over ``inputs``, every row computed only by its chosen experts.

    The gates' choices share one dispatch: one gather, one batched product per expert layer.

    Args:
        gate_weights: list of G ``(B, E)`` gate weights; each row's k largest are its choices.
        inputs: ``(B, d)`` the experts' input.
        bank: :class:`mmoe.layers.experts.ExpertBank` with E experts.
        capacity_factor: float: training capacity (:func:`train_capacity`, for ``G * k`` choices
            a row); None: nothing dropped (inference).

    Returns:
        ``(mixtures, keep)``: G ``(B, units)`` tensors; ``(B, G * k)`` bool, the kept assignments.
    """
    gates = len(gate_weights)
    mixtures, keep = pooled_mixtures(gate_weights, [[0]] * gates, [bank], [inputs], [k] * gates, capacity_factor)
    return mixtures, ops.concatenate(keep, axis=1)


def dropped_fraction(gate_weights, k: int, capacity_factor: float) -> float:
    """The share of a batch's nonzero assignments that training's capacity would drop.

    Args:
        gate_weights: ``(B, G, E)`` weights of G gates sharing one dispatch, for one
            training-sized batch (the serving model's ``gate_weights``; for OMoE one gate).
    """
    batch, gates, num_experts = (int(d) for d in gate_weights.shape)
    picked = [choices(gate_weights[:, g], k) for g in range(gates)]
    values = ops.concatenate([v for v, _ in picked], axis=1)
    experts = ops.concatenate([e for _, e in picked], axis=1)
    _, keep, _ = route(experts, num_experts, train_capacity(batch, num_experts, gates * k, capacity_factor))
    chosen = ops.cast(values > 0, "float32")
    dropped = ops.sum(chosen * (1.0 - ops.cast(keep, "float32")))
    return float(ops.convert_to_numpy(dropped / ops.maximum(ops.sum(chosen), 1.0)))
