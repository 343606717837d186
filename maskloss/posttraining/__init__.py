r"""Post-training losses: masked token log-probs, the RL surrogates, KL estimators, DPO/IPO, aggregations.

The losses of LLM post-training (GRPO, DAPO, Dr. GRPO, GSPO, DPO, IPO, SimPO) differ mainly in
which masked denominator they divide by. The per-token pieces live here, and every
aggregation is one :class:`maskloss.MaskedTotals` (per-sequence numerator and token count)
read off by :func:`aggregate`:

=========================  ================================================================  ============
``mode``                   value                                                             trainers
=========================  ================================================================  ============
``"token_mean"``           :math:`\sum_{bt} m\ell / \sum_{bt} m` (this batch's tokens)       TRL bnpo,
                                                                                             verl token-mean
``"sequence_mean"``        :math:`\frac1K\sum_{b:L_b>0} \frac{1}{L_b}\sum_t m\ell`           TRL grpo
``"batch_mean"``           :math:`\frac1B\sum_b \sum_t m\ell`                                verl seq-mean-token-sum
``"sum"``                  :math:`\sum_{bt} m\ell`                                           verl token-sum
``"constant"``             :math:`\sum_{bt} m\ell / c`, ``c`` configured (Dr. GRPO:          TRL dr_grpo
                           :math:`B\cdot` ``max_completion_length``)
``"global_token_mean"``    :math:`\sum_{bt} m\ell / N_{\text{global}}`, ``N`` the valid      TRL dapo,
                           tokens of the whole step (all micro-batches and ranks)            verl token-mean
=========================  ================================================================  ============

(:math:`L_b = \sum_t m_{bt}`, :math:`K` the sequences with :math:`L_b > 0`.) Only ``"sum"``,
``"constant"`` and ``"global_token_mean"`` are sums of per-micro-batch values (invariant to
micro-batching and to the number of ranks); ``"batch_mean"`` is invariant when micro-batches
hold equally many sequences.

Everything computes in float64, selects valid steps with ``np.where`` (garbage under the
mask never reaches a value or a gradient) and never writes into its inputs.
"""

from __future__ import annotations

from maskloss.posttraining import aggregation as _aggregation
from maskloss.posttraining import kl as _kl
from maskloss.posttraining.aggregation import aggregate
from maskloss.posttraining.kl import kl_estimate
from maskloss.posttraining.logprobs import sequence_logprobs, token_logprobs
from maskloss.posttraining.policy import clipped_surrogate, policy_gradient_objective, sequence_ratio
from maskloss.posttraining.ppo import clipped_value_loss, high_entropy_mask
from maskloss.posttraining.preference import dpo_loss

#: Names accepted by :func:`aggregate`'s ``mode``.
AGGREGATIONS: tuple[str, ...] = _aggregation.AGGREGATIONS
#: Names accepted by :func:`kl_estimate`'s ``estimator``.
KL_ESTIMATORS: tuple[str, ...] = _kl.KL_ESTIMATORS

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "aggregate",
    "clipped_surrogate",
    "clipped_value_loss",
    "dpo_loss",
    "high_entropy_mask",
    "kl_estimate",
    "policy_gradient_objective",
    "sequence_logprobs",
    "sequence_ratio",
    "token_logprobs",
]
