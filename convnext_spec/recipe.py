"""The training recipe both frameworks share: which parameters get weight decay, and the
optimizer settings, written once so that `convnext_torch.train` and `convnext_tf.train`
configure the same optimizer. Framework-free, like `convnext_spec.spec`.

Weight decay follows the official ConvNeXt and ConvNeXt V2 recipes: none for normalisation
weights, biases, layer scale (`gamma`, one value a channel) and GRN's `gamma` and `beta`;
every conv and linear kernel decays. The rule reads a parameter's last name and its number of
dimensions, which are the same in both frameworks (`stages.0.0.gamma` / `.../gamma`).
"""

from __future__ import annotations

from dataclasses import dataclass

NO_DECAY_NAMES = ("gamma", "beta")  # layer scale; GRN's scale and shift (1, 1, 1, C)


def decays(name: str, ndim: int) -> bool:
    """Whether the parameter called `name` (a full PyTorch or Keras path, or its last part),
    of `ndim` dimensions, gets weight decay."""
    leaf = name.replace("/", ".").rsplit(".", 1)[-1]
    return ndim > 1 and leaf not in NO_DECAY_NAMES


@dataclass(frozen=True)
class OptimizerSettings:
    """One optimizer, set the same way in both frameworks.

    The two frameworks' optimizers differ by definition in four places; these settings make
    them take the same step (tests/models/test_training.py: float64, three steps, weights within
    4e-16 relative). What each difference changes when left alone, measured there on a small
    ConvNeXt (float64, three steps, largest relative weight difference):
    - SGD weight decay: PyTorch adds it to the gradient (L2, carried by the momentum), Keras
      subtracts it from the weights (decoupled): `sgd` here has none.
    - Adam's epsilon: PyTorch adds it to sqrt(v_hat); Keras folds the bias correction into
      the learning rate, so its epsilon acts as epsilon / sqrt(1 - beta_2^t) in PyTorch's
      terms (31.6x at the first step). The same 1e-8 in both: 6.5e-4; 1e-12: 1.0e-7; the
      1e-20 here: 1e-15.
    - In float64 only: Keras keeps the learning rate in a float32 variable (0.01: 2.8e-9) and
      casts momentum and betas through a float32 tensor (momentum 0.9: 1.8e-9; betas 0.9 /
      0.999: 2.3e-7); float64 training is the same in both only with values float32 holds
      exactly (a learning rate of 2^-10, momentum 0.875). In float32 both round them alike.
    """

    name: str = "adamw"  # sgd or adamw
    learning_rate: float = 2**-10  # 0.00098, which float32 holds exactly
    weight_decay: float = 0.05  # adamw only
    momentum: float = 0.9  # sgd
    beta_1: float = 0.9  # adamw
    beta_2: float = 0.999
    epsilon: float = 1e-20

    def __post_init__(self) -> None:
        if self.name not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, not {self.name!r}")
