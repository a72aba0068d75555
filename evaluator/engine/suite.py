"""The reference suite of SPEC §3 by name, without importing TensorFlow.

The recipes themselves (engine.defenses) import TensorFlow and run only in the
sandboxed child; the web process and the worker's main process need just the
names, their order and a line about each.
"""

from __future__ import annotations

REFERENCES: dict[str, str] = {
    "control": "Plain CNN: two convolution blocks and a dense head (the charter's control).",
    "pca": "Input projected onto the principal components keeping 99% of the variance, "
    "then the control architecture.",
    "noise": "Gaussian noise added to the input at inference; sigma from a recorded grid search.",
    "down50": "Input downsampled by 50% and back up, then the control architecture.",
    "down75": "Input downsampled by 75% and back up, then the control architecture.",
    "autoencoder": "Dense autoencoder in front of the classifier.",
    "conv-autoencoder": "Convolutional autoencoder in front of the classifier.",
    "mtl": "Multi-task network: shared trunk, digit head plus an auxiliary head.",
    "gan-data": "Classifier trained only on images from a conditional GAN trained on the train split.",
    "adv-trained": "Adversarially trained CNN (PGD training): the top rung, beyond the charter.",
}
CONTROL = "control"
