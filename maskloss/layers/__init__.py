r"""NumPy reference layers that reproduce how Keras propagates a mask to the loss.

Keras's mask rules and Keras 3's weight layout, in float64: load a real layer's
weights with ``layer.set_weights(keras_layer.get_weights())`` and compare. Every layer
is a call ``layer(x, mask=None, ...)`` plus ``layer.compute_mask(x, mask)``; a
:class:`Sequential` passes masks between them and applies the output mask to the loss.
See ``docs/course/06-propagation.md`` for the rules and where frameworks differ.

>>> import numpy as np
>>> from maskloss.layers import LSTM, Masking, Sequential
>>> model = Sequential([Masking(0.0), LSTM(3, return_sequences=True)])
>>> model.compute_mask(np.array([[[0.0], [1.0]]]))
array([[False,  True]])
"""

from maskloss.layers._base import Layer
from maskloss.layers.core import Dense, GlobalAveragePooling1D
from maskloss.layers.describe import describe
from maskloss.layers.masking import Embedding, Masking
from maskloss.layers.recurrent import GRU, LSTM, SimpleRNN
from maskloss.layers.sequential import Sequential, Trace
from maskloss.layers.wrappers import Bidirectional

__all__ = [
    "GRU",
    "LSTM",
    "Bidirectional",
    "Dense",
    "Embedding",
    "GlobalAveragePooling1D",
    "Layer",
    "Masking",
    "Sequential",
    "SimpleRNN",
    "Trace",
    "describe",
]
