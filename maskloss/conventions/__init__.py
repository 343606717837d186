r"""Framework conventions as NumPy truth: one module per framework, float64, no framework imported.

Every framework computes "the masked loss" a little differently: which denominator
(valid tokens, all positions, summed weights), whether weights enter the numerator
only or both, how label smoothing spreads its mass, NaN or 0 for a batch with no valid
step, clipping of probabilities. Each module below mirrors one framework's functions
(same names, argument names, defaults and shapes) as NumPy functions that compute in
float64 and reproduce the framework to float64 rounding. ``maskloss conformance``
runs them against the installed frameworks.

Importing this package (or any module in it) never imports a framework; import the
module you need explicitly, under a name that does not shadow the framework (a star
import binds nothing, on purpose: it would otherwise rebind ``torch`` or ``optax``):

>>> from maskloss.conventions import torch as torch_conv
>>> float(torch_conv.cross_entropy([[0.0, 0.0]], [1]))   # log 2
0.6931471805599453

Modules
-------
torch
    ``torch.nn.functional``: ``cross_entropy`` (index and probability targets, class
    weights, ``ignore_index``, label smoothing), ``nll_loss``, ``binary_cross_entropy``
    (log clamped at -100), ``binary_cross_entropy_with_logits``, ``l1_loss``, ``mse_loss``.
keras3
    Keras 3 losses: ``sum_over_batch_size`` / ``mean_with_sample_weight`` / ``sum``
    reductions, ``ignore_class``, probability clipping and renormalising.
tf_keras
    tf.keras and tf_keras 2.x: weights in the numerator only, NaN when all masked (TF >=
    2.11; ``version="2.10"`` for the older mean over all steps), probability clipping as
    TensorFlow does it.
keras2
    Keras 2.0-2.2.5 ``weighted_masked_objective`` and Keras 2.3 / tf.keras 2.0-2.10
    (padding in the denominator).
tfa
    TensorFlow Addons ``sequence_loss`` / ``SequenceLoss`` (average/sum across
    timesteps and batch).
optax
    ``softmax_cross_entropy`` and ``softmax_cross_entropy_with_integer_labels`` with
    ``where`` as a row mask or a class mask.
allennlp
    ``sequence_cross_entropy_with_logits`` (``average="batch"``/``"token"``/None,
    label smoothing, focal ``gamma``, ``alpha``).
fairseq
    ``label_smoothed_nll_loss`` (>= 0.12 and <= 0.10 smoothing spreads).
t5x
    ``compute_weighted_cross_entropy`` (soft targets minus their entropy, z-loss,
    normalising factors).
hf
    transformers ``ForCausalLMLoss`` (label shift, ``num_items_in_batch``).
trl
    TRL ``GRPOTrainer`` loss types (grpo, bnpo, dr_grpo, dapo, cispo, sapo, luspo) and the
    DPO losses.
verl
    verl ``agg_loss`` (token-mean, token-sum, seq-mean-token-sum(-norm), seq-mean-token-mean;
    ``version="0.4"``), ``kl_penalty``, ``compute_policy_loss``.
"""

#: The convention modules, one per framework (import each explicitly; see above).
MODULES: tuple[str, ...] = (
    "allennlp", "fairseq", "hf", "keras2", "keras3", "optax", "t5x", "tf_keras", "tfa", "torch", "trl", "verl",
)

__all__: list[str] = []
