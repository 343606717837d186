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
from maskloss.divergences import entropy, jensen_shannon, kl_divergence
from maskloss.gradients import value_and_grad, vjp
from maskloss.head_terms import token_accuracy, z_loss
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
from maskloss.packing import Packing, pack, unpack
from maskloss.posttraining import (
    aggregate,
    clipped_surrogate,
    clipped_value_loss,
    dpo_loss,
    high_entropy_mask,
    kl_estimate,
    policy_gradient_objective,
    sequence_logprobs,
    sequence_ratio,
    token_logprobs,
)
from maskloss.reductions import REDUCTIONS, SCALAR_REDUCTIONS, MaskedTotals, Reduction, reduce
from maskloss.segments import (
    lengths_from_segment_ids,
    next_token_targets,
    segment_ids_from_cu_seqlens,
    segment_ids_from_lengths,
    segment_ids_from_position_ids,
)
from maskloss.sharding import Shard, ShardLayout, ShardScales, shard_scales

__version__ = "0.1.0"

__all__ = [
    "REDUCTIONS",
    "SCALAR_REDUCTIONS",
    "GlobalCounts",
    "MaskedTotals",
    "Packing",
    "Reduction",
    "Shard",
    "ShardLayout",
    "ShardScales",
    "aggregate",
    "binary_crossentropy",
    "categorical_crossentropy",
    "clipped_surrogate",
    "clipped_value_loss",
    "dpo_loss",
    "entropy",
    "get_num_threads",
    "high_entropy_mask",
    "jensen_shannon",
    "kl_divergence",
    "kl_estimate",
    "lengths_from_mask",
    "lengths_from_segment_ids",
    "linear_cross_entropy",
    "mae",
    "mask_from_ids",
    "mask_from_lengths",
    "mask_from_padding",
    "mask_from_sentinel",
    "masked_totals",
    "micro_batch_value_and_grad",
    "mse",
    "next_token_targets",
    "pack",
    "padding_side",
    "policy_gradient_objective",
    "reduce",
    "repad",
    "segment_ids_from_cu_seqlens",
    "segment_ids_from_lengths",
    "segment_ids_from_position_ids",
    "sequence_logprobs",
    "sequence_ratio",
    "set_num_threads",
    "shard_scales",
    "sparse_categorical_crossentropy",
    "token_accuracy",
    "token_logprobs",
    "unpack",
    "value_and_grad",
    "vjp",
    "z_loss",
]
