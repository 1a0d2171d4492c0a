"""The paper's numbers for its custom handwritten digits (section 3.2), written once: the study
prints them beside ours and the report compares with them."""

from __future__ import annotations

# Keras LeNet-5 retrained from scratch on the 488 custom digits (train + val): accuracy after
# 10 and 50 epochs (figs. 12-13).
PAPER_ACCURACY: dict[int, dict[str, float]] = {
    10: {"train_acc": 0.645, "val_acc": 0.492},
    50: {"train_acc": 0.973, "val_acc": 0.615},
}
