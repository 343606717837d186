r"""fairseq ``label_smoothed_nll_loss`` (both versions) and the trainer's normalisation, in NumPy.

Reproduces ``fairseq/criterions/label_smoothed_cross_entropy.py``: the function
``label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index=None, reduce=True)`` with
fairseq's argument names, defaults, return value ``(loss, nll_loss)`` and shapes, plus a
``version`` argument choosing the smoothing rule; results are float64.

With :math:`V` classes, :math:`n = -\mathrm{lp}_y` and :math:`s = \sum_c -\mathrm{lp}_c`:

===========================  ===============================================================
version                      per-token loss
===========================  ===============================================================
>= 0.12 (and ``main``)       :math:`(1 - \varepsilon - \frac{\varepsilon}{V-1})\,n
                             + \frac{\varepsilon}{V-1}\, s` (mass :math:`\varepsilon` spread
                             over the :math:`V-1` wrong classes)
<= 0.10                      :math:`(1-\varepsilon)\,n + \frac{\varepsilon}{V} s`
                             (torch's ``label_smoothing``: the gold class gets a share too)
===========================  ===============================================================

(source read at facebookresearch/fairseq commits 00bc279, old rule, and f7c559c, new rule.)
The new rule equals torch's ``label_smoothing`` with :math:`\varepsilon V/(V-1)`.

Quirks, stated plainly:

* ``lprobs`` are used as given: fairseq takes them from ``get_normalized_probs`` and never
  re-normalises. ``nll_loss`` is unsmoothed, for logging.
* Targets equal to ``ignore_index`` (fairseq's ``padding_idx``, usually 1) count 0. With
  ``reduce=False`` the outputs keep a trailing axis of 1 when ``ignore_index`` is given
  (``target.shape + (1,)``) and not otherwise: fairseq squeezes only in the ``else`` branch.
* fairseq multiplies plainly: ``epsilon=0`` with a ``-inf`` log-probability at a valid step
  (a banned token) gives ``0 * inf = NaN`` in ``loss`` (``nll_loss`` stays finite); this is
  reproduced. Ignored steps are never read here (fairseq reads them).
* The criterion returns the *sum*; the trainer divides the summed gradients of the whole
  update (all micro-batches, all workers) by the total ``sample_size``: the number of
  non-pad target tokens (``ntokens``), or of sentences with ``--sentence-avg``, and by 1
  when that total is 0. :func:`sample_size` and :func:`update_loss` reproduce that.
* ``epsilon`` must lie in ``[0, 1]`` here and ``V >= 2`` for the new rule (fairseq would
  divide by zero).

Examples
--------
>>> import numpy as np
>>> from maskloss.conventions import fairseq
>>> lprobs = np.log([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
>>> target = np.array([0, 1])          # 1 = padding_idx: the second token is padding
>>> loss, nll = fairseq.label_smoothed_nll_loss(lprobs, target, 0.1, ignore_index=1)
>>> round(float(nll), 6)               # ln 2
0.693147
>>> round(float(loss), 6)              # (1 - .1 - .05) ln 2 + .05 (ln 2 + 2 ln 4)
0.762462
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import numpy.typing as npt

from maskloss import pointwise
from maskloss._checks import as_numeric, check_flag, check_ignore_index, check_label_smoothing
from maskloss._types import FloatArray, IntArray
from maskloss.conventions._golden_steps import check_scores, check_targets, per_valid_row

__all__ = ["label_smoothed_nll_loss", "sample_size", "update_loss"]

DEFAULT_VERSION = "0.12"


def _new_rule(version: object) -> bool:
    """True for fairseq >= 0.11 (the ``eps / (V - 1)`` rule), False for <= 0.10."""
    match = re.match(r"^v?(\d+)\.(\d+)", version) if isinstance(version, str) else None
    if match is None:
        raise ValueError(f"version must be a fairseq version such as '0.10.2' or '0.12', got {version!r}")
    return (int(match.group(1)), int(match.group(2))) > (0, 10)


def label_smoothed_nll_loss(
    lprobs: npt.ArrayLike,
    target: npt.ArrayLike,
    epsilon: float,
    ignore_index: int | None = None,
    reduce: bool = True,
    version: str = DEFAULT_VERSION,
) -> tuple[Any, Any]:
    r"""fairseq's label-smoothed NLL: ``(loss, nll_loss)``, summed when ``reduce``.

    .. math::
        \text{loss} = \sum_{i:\,y_i \ne \text{pad}} (1 - \varepsilon - e)\,(-\mathrm{lp}_{i,y_i})
                      + e \sum_c (-\mathrm{lp}_{ic}), \qquad
        e = \frac{\varepsilon}{V-1}\ (\ge 0.12) \text{ or } \frac{\varepsilon}{V}\ (\le 0.10),

    where the old rule's gold coefficient is :math:`1 - \varepsilon` (the same formula with
    :math:`e` moved onto the gold class).

    Parameters
    ----------
    lprobs : array_like, shape (..., V)
        Log-probabilities, used as given (rows at ignored targets are never read).
    target : array_like of int, shape lprobs.shape[:-1] or lprobs.shape[:-1] + (1,)
    epsilon : float in [0, 1]
    ignore_index : int, optional
        The padding index; ``None`` counts every target.
    reduce : bool, default True
        Sum to scalars; else per-token arrays (see the module note on their shape).
    version : str, default "0.12"
        fairseq version whose rule to use: ``"0.10.2"`` or lower gives the old rule.

    Returns
    -------
    (loss, nll_loss) : numpy.float64 each, or arrays when ``reduce=False``

    Examples
    --------
    The old rule is torch's label smoothing: :math:`0.9\ln 2 + \frac{0.1}{3}(\ln 2 + 2\ln 4)`.

    >>> import numpy as np
    >>> from maskloss.conventions.fairseq import label_smoothed_nll_loss
    >>> loss, _ = label_smoothed_nll_loss(np.log([[0.5, 0.25, 0.25]]), [0], 0.1, version="0.10.2")
    >>> round(float(loss), 6)
    0.739357
    """
    new_rule = _new_rule(version)
    check_flag(reduce, "reduce")
    lp = check_scores(lprobs, "lprobs")
    vocab = lp.shape[-1]
    eps = check_label_smoothing(epsilon, "epsilon")
    if new_rule and vocab < 2:
        raise ValueError(f"the fairseq >= 0.12 rule divides epsilon by V - 1; lprobs has V = {vocab} class")
    t = as_numeric(target, "target")
    steps = lp.shape[:-1]
    if t.shape == (*steps, 1):
        t = t.reshape(steps)
    if check_ignore_index(ignore_index) is not None:
        valid = t != ignore_index
    else:
        valid = np.ones(t.shape, dtype=bool)
    labels = check_targets(t, steps, valid, vocab, name="target")

    def rows(lab: IntArray, x: FloatArray) -> FloatArray:
        nll = pointwise.sparse_cross_entropy(lab, x, None, 0.0)
        with np.errstate(invalid="ignore"):
            smooth = np.sum(-x, axis=-1)
        return np.stack([nll, smooth], axis=-1)

    nll_loss, smooth_loss = per_valid_row(rows, valid, labels, lp, 2)
    if ignore_index is not None:
        nll_loss, smooth_loss = nll_loss[..., None], smooth_loss[..., None]
    if reduce:
        nll_loss, smooth_loss = np.float64(nll_loss.sum()), np.float64(smooth_loss.sum())
    eps_i = eps / (vocab - 1) if new_rule else eps / vocab
    gold = 1.0 - eps - eps_i if new_rule else 1.0 - eps
    with np.errstate(invalid="ignore"):
        loss = gold * nll_loss + eps_i * smooth_loss
    return loss, nll_loss


def sample_size(target: npt.ArrayLike, padding_idx: int = 1, sentence_avg: bool = False) -> int:
    """The criterion's ``sample_size``: non-pad target tokens (``ntokens``), or sentences.

    Examples
    --------
    >>> sample_size([[5, 6, 2], [7, 2, 1]], padding_idx=1)
    5
    >>> sample_size([[5, 6, 2], [7, 2, 1]], sentence_avg=True)
    2
    """
    t = as_numeric(target, "target", min_ndim=1)
    if sentence_avg:
        return int(t.shape[0])
    return int(np.count_nonzero(t != padding_idx))


def update_loss(losses: npt.ArrayLike, sample_sizes: npt.ArrayLike) -> np.float64:
    r"""The loss whose gradient the fairseq trainer applies: :math:`\sum L_k / \sum S_k`.

    ``losses`` and ``sample_sizes`` hold the summed loss and ``sample_size`` of every
    micro-batch of one update on every worker. The trainer sums the gradients and
    multiplies by ``world_size / (sample_size or 1.0)`` after DDP's mean over workers, so
    a zero total divides by 1 (trainer.py, ``multiply_grads``).

    Examples
    --------
    Two micro-batches: 5 tokens with summed loss 8.0 and 1 token with 4.0.

    >>> float(update_loss([8.0, 4.0], [5, 1]))   # (8 + 4) / 6, not mean(8/5, 4/1)
    2.0
    """
    total_loss = float(np.sum(as_numeric(losses, "losses").astype(np.float64)))
    total_size = float(np.sum(as_numeric(sample_sizes, "sample_sizes").astype(np.float64)))
    divisor = total_size if total_size != 0 else 1.0
    result: np.float64 = np.float64(total_loss / divisor)
    return result
