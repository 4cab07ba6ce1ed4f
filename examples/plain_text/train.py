"""An older training script: settings from environment variables, progress as plain text.

    LR=0.01 ALPHA=0.0001 HIDDEN=64 EPOCHS=10 SEED=0 python train.py

It prints one line per epoch, ``Epoch 3/10 - loss 0.4012 - val_acc: 0.9133``, and nothing machine-readable;
hpctune.yaml beside it reads those lines with a regular expression. A scikit-learn MLP on the digits data
set: a command task runs any program, whatever it is written in or with.
"""

from __future__ import annotations

import os

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

lr = float(os.environ.get("LR", "0.001"))
alpha = float(os.environ.get("ALPHA", "0.0001"))
hidden = int(os.environ.get("HIDDEN", "64"))
epochs = int(os.environ.get("EPOCHS", "10"))
seed = int(os.environ.get("SEED", "0"))

x, y = load_digits(return_X_y=True)
x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.25, stratify=y, random_state=0)
model = MLPClassifier(hidden_layer_sizes=(hidden,), learning_rate_init=lr, alpha=alpha, random_state=seed)
print(f"training an MLP with {hidden} hidden units, lr {lr}, alpha {alpha}")
for epoch in range(1, epochs + 1):
    model.partial_fit(x_train, y_train, classes=list(range(10)))  # one pass over the training data
    print(
        f"Epoch {epoch}/{epochs} - loss {model.loss_:.4f} - val_acc: {model.score(x_val, y_val):.4f}",
        flush=True,
    )
print("done")
