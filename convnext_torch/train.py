"""Training a ConvNeXt in PyTorch: the optimizer, one step, evaluation.

convnext_tf/train.py is the same in Keras, function for function, in the same order; both take
their settings from convnext_spec.recipe, so that from the same weights and the same batch the
two take the same step (tests/models/test_training.py: 1e-10 relative in float64).

    model = create_model("convnext_atto", num_classes=10)
    optimizer = create_optimizer(model, OptimizerSettings("adamw", learning_rate=1e-3))
    loss = train_step(model, optimizer, images, labels)  # images (N, C, H, W), labels (N,)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convnext_spec.recipe import OptimizerSettings, decays


def create_optimizer(model: nn.Module, settings: OptimizerSettings) -> torch.optim.Optimizer:
    """SGD with momentum, or AdamW with weight decay on the kernels only (convnext_spec.recipe)."""
    if settings.name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=settings.learning_rate, momentum=settings.momentum
        )
    parameters = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in parameters if decays(n, p.ndim)]},
        {"params": [p for n, p in parameters if not decays(n, p.ndim)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=settings.learning_rate,
        betas=(settings.beta_1, settings.beta_2),
        eps=settings.epsilon,
        weight_decay=settings.weight_decay,
    )


def loss_of(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the model's logits, in training mode (drop path on, if any)."""
    model.train()
    return F.cross_entropy(model(images), labels)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor
) -> float:
    """Forward, loss, backward, one optimizer step; the loss before the step."""
    optimizer.zero_grad()
    loss = loss_of(model, images, labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """The gradient of the loss for every parameter, by name; the weights are not changed."""
    model.zero_grad()
    loss_of(model, images, labels).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    model.zero_grad()
    return grads


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits in inference mode (model.eval(): drop path off), a batch at a time."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
