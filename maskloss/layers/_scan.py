r"""The masked recurrence shared by every RNN layer (Keras ``backend.rnn``, its documented rule).

For each processed step ``t`` (in reverse time order with ``go_backwards``), with the
cell's new output :math:`o_t` and states :math:`s_t`:

.. math::
    s_t = m_t \,?\, \text{cell}(x_t, s_{t-1}) : s_{t-1}, \qquad
    y_t = m_t \,?\, o_t : (\text{zero\_output\_for\_mask} \,?\, 0 : h_{t-1})

where :math:`h_{t-1} = s_{t-1}[0]`, the previous output. So a **leading** masked step
emits the initial state :math:`h_0` (zeros unless ``initial_state`` is given), a later
masked step repeats the last valid output, and the final output (what
``return_sequences=False`` returns) is the output at the last valid step processed,
:math:`h_0` if there is none. Selection is by ``np.where``: NaN in a masked step's
input never reaches an output or a state.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from maskloss._types import BoolArray, FloatArray

__all__ = ["Step", "masked_scan"]

#: ``step(projected_input_t, states) -> (output_t, new_states)``
Step = Callable[[FloatArray, list[FloatArray]], tuple[FloatArray, list[FloatArray]]]


def masked_scan(
    step: Step,
    projected: FloatArray,
    mask: BoolArray | None,
    states: list[FloatArray],
    *,
    go_backwards: bool = False,
    zero_output_for_mask: bool = False,
) -> tuple[FloatArray, FloatArray, list[FloatArray]]:
    """Run ``step`` over the time axis of ``projected`` ``(B, T, ...)``, applying the mask rule.

    Returns ``(outputs, last_output, final_states)``; ``outputs`` is in processing order
    (reversed in time with ``go_backwards``, as Keras returns it).
    """
    steps = projected.shape[1]
    times = range(steps - 1, -1, -1) if go_backwards else range(steps)
    outputs: list[FloatArray] = []
    last = states[0]
    for t in times:  # the loop over time is inherent to recurrence; the batch is vectorised
        with np.errstate(invalid="ignore", over="ignore"):  # garbage at masked steps is dropped below
            out, new_states = step(projected[:, t], states)
        if mask is not None:
            valid = mask[:, t, None]
            held = np.zeros_like(out) if zero_output_for_mask else states[0]
            last = np.where(valid, out, last)
            out = np.where(valid, out, held)
            new_states = [np.where(valid, new, old) for new, old in zip(new_states, states, strict=True)]
        else:
            last = out
        outputs.append(out)
        states = new_states
    if not outputs:
        raise ValueError("the input has no steps: its time axis has size 0")
    return np.stack(outputs, axis=1), last, states
