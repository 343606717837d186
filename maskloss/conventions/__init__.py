r"""Framework conventions as NumPy truth: one module per framework, float64, no framework imported.

Every framework computes "the masked loss" a little differently: which denominator
(valid tokens, all positions, summed weights), whether weights enter the numerator
only or both, how label smoothing spreads its mass, NaN or 0 for a batch with no valid
step, clipping of probabilities. Each module below mirrors one framework's functions
(same names, argument names, defaults and shapes) as NumPy functions that compute in
float64 and reproduce the framework to float64 rounding. ``maskloss conformance``
runs them against the installed frameworks.

Importing this package (or any module in it) never imports a framework. Each module loads
on first use (``maskloss.conventions.torch`` works after ``import maskloss.conventions``);
import the one you need under a name that does not shadow the framework (a star import
binds nothing, on purpose: it would otherwise rebind ``torch`` or ``optax``):

>>> from maskloss.conventions import torch as torch_conv
>>> float(torch_conv.cross_entropy([[0.0, 0.0]], [1]))   # log 2
0.6931471805599453

Modules
-------
torch
    ``torch.nn.functional``: ``cross_entropy`` (index and probability targets, class
    weights, ``ignore_index``, label smoothing), ``nll_loss``, ``binary_cross_entropy``
    (log clamped at -100), ``binary_cross_entropy_with_logits``, ``l1_loss``, ``mse_loss``,
    ``kl_div`` (``batchmean``, ``log_target``).
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
liger
    Liger-Kernel's ``liger_cross_entropy`` (``lse_square_scale`` z-loss inside the loss,
    ``return_z_loss``, ``softcap``, token accuracy; 0 for an all-ignored ``"mean"``).
optax
    ``softmax_cross_entropy``, ``softmax_cross_entropy_with_integer_labels`` and
    ``poly_loss_cross_entropy`` with ``where`` as a row mask or a class mask;
    ``safe_softmax_cross_entropy``, ``sigmoid_binary_cross_entropy``; ``kl_divergence``,
    ``kl_divergence_with_log_targets``, ``generalized_kl_divergence`` (``convex_kl_divergence``).
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
torchtune
    torchtune's distillation losses ``ForwardKLLoss``, ``ReverseKLLoss``, ``SymmetricKLLoss`` and
    their chunked forms (the forward one is a cross-entropy; the empty batch gives 0).
trl
    TRL ``GRPOTrainer`` loss types (grpo, bnpo, dr_grpo, dapo, cispo, sapo, luspo) and the
    DPO losses; ``entropy_from_logits``, ``selective_log_softmax``.
verl
    verl ``agg_loss`` (token-mean, token-sum, seq-mean-token-sum(-norm), seq-mean-token-mean;
    ``version="0.4"``), ``kl_penalty``, ``compute_policy_loss``.
cce
    Apple's Cut Cross-Entropy ``linear_cross_entropy`` (embeddings and classifier, ``shift``,
    ``ignore_index``, ``softcap``).
litgpt
    litgpt's ``chunked_cross_entropy`` (logits in time chunks, ``chunk_size``, ``ignore_index``).
recipes
    Training-step recipes (HF Trainer, torchtitan, Megatron-LM, verl, TRL) as step functions
    for :func:`maskloss.testing.check_training_step`: the factor each shard's summed loss is
    multiplied by, and whether the ranks' gradients are summed or averaged.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: The convention modules: one per framework, and ``recipes`` (the frameworks' training-step
#: rules); each loads on first use (see above).
MODULES: tuple[str, ...] = (
    "allennlp", "cce", "fairseq", "hf", "keras2", "keras3", "liger", "litgpt", "optax", "recipes", "t5x",
    "tf_keras", "tfa", "torch", "torchtune", "trl", "verl",
)

__all__: list[str] = []


def __getattr__(name: str) -> ModuleType:
    """Load a convention module on first attribute access (PEP 562), as scipy does.

    ``import maskloss.conventions as cv; cv.torch`` then works, and still imports no
    framework: ``cv.torch`` is maskloss's mirror module, not PyTorch.
    """
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *MODULES])
