"""Type aliases shared by the modules of maskloss."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

Reduction = Literal["none", "sum", "token_mean", "sequence_mean", "batch_mean", "element_mean"]
Side = Literal["right", "left"]
