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
from maskloss.accumulation import masked_totals
from maskloss.gradients import value_and_grad
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
from maskloss.reductions import REDUCTIONS, SCALAR_REDUCTIONS, MaskedTotals, reduce

__version__ = "0.1.0"

__all__ = [
    "REDUCTIONS",
    "SCALAR_REDUCTIONS",
    "MaskedTotals",
    "binary_crossentropy",
    "categorical_crossentropy",
    "get_num_threads",
    "lengths_from_mask",
    "mae",
    "mask_from_ids",
    "mask_from_lengths",
    "mask_from_padding",
    "mask_from_sentinel",
    "masked_totals",
    "mse",
    "padding_side",
    "reduce",
    "repad",
    "set_num_threads",
    "sparse_categorical_crossentropy",
    "value_and_grad",
]
