"""Type aliases shared by the modules of maskloss."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]
#: What a loss or reduction returns: a ``numpy.float64`` for a scalar reduction, a float64 array
#: of the steps' shape for ``reduction="none"``.
LossValue = np.float64 | FloatArray

#: The reductions that return a scalar, in the order of the table of :mod:`maskloss.reductions`.
ScalarReduction = Literal["sum", "token_mean", "sequence_mean", "batch_mean", "element_mean"]
#: Every name ``reduction=`` accepts: the one definition (``maskloss.REDUCTIONS`` is read off it).
Reduction = Literal["none", ScalarReduction]
#: The modes of :func:`maskloss.aggregate`: scalar reductions, and two whose count the caller gives.
Aggregation = Literal["token_mean", "sequence_mean", "batch_mean", "sum", "constant", "global_token_mean"]
Side = Literal["right", "left"]
