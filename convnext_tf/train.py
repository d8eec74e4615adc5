"""Training a ConvNeXt in Keras: the optimizer, one step, evaluation.

convnext_torch/train.py is the same in PyTorch, function for function, in the same order; both
take their settings from convnext_spec.recipe, so that from the same weights and the same batch
the two take the same step (tests/models/test_training.py: 1e-10 relative in float64). Keras also
trains with model.compile(optimizer, loss) and model.fit(); train_step is what fit runs, written
out, as PyTorch has no fit.

    model = create_model("convnext_atto", num_classes=10)
    optimizer = create_optimizer(model, OptimizerSettings("adamw", learning_rate=1e-3))
    loss = train_step(model, optimizer, images, labels)  # images (N, H, W, C), labels (N,)
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from convnext_spec.recipe import OptimizerSettings, decays


def create_optimizer(model: keras.Model, settings: OptimizerSettings) -> keras.Optimizer:
    """SGD with momentum, or AdamW with weight decay on the kernels only (convnext_spec.recipe).
    Keras-only: the model must be built (its variables exist) to be excluded from the decay."""
    if settings.name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=settings.learning_rate, momentum=settings.momentum
        )
    optimizer = keras.optimizers.AdamW(
        learning_rate=settings.learning_rate,
        beta_1=settings.beta_1,
        beta_2=settings.beta_2,
        epsilon=settings.epsilon,
        weight_decay=settings.weight_decay,
    )
    no_decay = [v for v in model.trainable_variables if not decays(v.path, len(v.shape))]
    optimizer.exclude_from_weight_decay(var_list=no_decay)
    return optimizer


def loss_of(model: keras.Model, images, labels):
    """Mean cross-entropy of the model's logits, in training mode (drop path on, if any)."""
    logits = model(images, training=True)
    return keras.ops.mean(
        keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    )


def train_step(model: keras.Model, optimizer: keras.Optimizer, images, labels) -> float:
    """Forward, loss, backward, one optimizer step; the loss before the step."""
    with tf.GradientTape() as tape:  # records the forward pass; PyTorch's autograd always does
        loss = loss_of(model, images, labels)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return float(loss)


def gradients(model: keras.Model, images, labels) -> dict:
    """The gradient of the loss for every parameter, by variable path; the weights are not
    changed."""
    with tf.GradientTape() as tape:
        loss = loss_of(model, images, labels)
    grads = tape.gradient(loss, model.trainable_variables)
    return {v.path: g for v, g in zip(model.trainable_variables, grads, strict=True)}


def predict(model: keras.Model, images, batch_size: int = 256) -> np.ndarray:
    """Logits in inference mode (training=False: drop path off), a batch at a time."""
    batches = [
        keras.ops.convert_to_numpy(model(images[i : i + batch_size], training=False))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(batches)
