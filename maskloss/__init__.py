r"""maskloss: the ground truth for masked sequence losses, in pure NumPy.

Masks are **True at valid steps** everywhere (the Keras convention). Every loss
computes in float64, excludes masked steps by selection (never by multiplying
with the mask), and reduces with one of :data:`REDUCTIONS`, each defined once in
:mod:`maskloss.reductions`.

>>> import maskloss
>>> maskloss.REDUCTIONS
('none', 'sum', 'token_mean', 'sequence_mean', 'batch_mean', 'element_mean')
"""

from maskloss._threads import get_num_threads, set_num_threads
from maskloss.accumulation import GlobalCounts, masked_totals, micro_batch_value_and_grad
from maskloss.gradients import value_and_grad
from maskloss.linear import linear_cross_entropy
from maskloss.losses import (
    binary_crossentropy,
    categorical_crossentropy,
    mae,
    mse,
    sparse_categorical_crossentropy,
)
from maskloss.masks import (
    lengths_from_mask,
    mask_from_ids,
    mask_from_lengths,
    mask_from_padding,
    mask_from_sentinel,
    padding_side,
    repad,
)
from maskloss.posttraining import (
    aggregate,
    clipped_surrogate,
    dpo_loss,
    kl_estimate,
    policy_gradient_objective,
    sequence_logprobs,
    sequence_ratio,
    token_logprobs,
)
from maskloss.reductions import REDUCTIONS, SCALAR_REDUCTIONS, MaskedTotals, reduce

__version__ = "0.1.0"

__all__ = [
    "REDUCTIONS",
    "SCALAR_REDUCTIONS",
    "GlobalCounts",
    "MaskedTotals",
    "aggregate",
    "binary_crossentropy",
    "categorical_crossentropy",
    "clipped_surrogate",
    "dpo_loss",
    "get_num_threads",
    "kl_estimate",
    "lengths_from_mask",
    "linear_cross_entropy",
    "mae",
    "mask_from_ids",
    "mask_from_lengths",
    "mask_from_padding",
    "mask_from_sentinel",
    "masked_totals",
    "micro_batch_value_and_grad",
    "mse",
    "padding_side",
    "policy_gradient_objective",
    "reduce",
    "repad",
    "sequence_logprobs",
    "sequence_ratio",
    "set_num_threads",
    "sparse_categorical_crossentropy",
    "token_logprobs",
    "value_and_grad",
]
