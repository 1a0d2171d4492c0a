"""The GAN losses on the discriminator's logits (`model.loss`, one of hybridlearn.gan.conf.LOSSES).

nonsaturating (the paper's: Keras' binary cross-entropy, Goodfellow et al. 2014):
    D: BCE over the real and fake logits together, targets `real_target` (1, or 1 - s with one-sided
       label smoothing s) and 0, i.e. the mean of softplus(-l_real - ...) terms over 2b images;
    G: BCE(l_fake, 1) = mean softplus(-l_fake) = -log D(G(z)), the non-saturating generator loss.
hinge (Lim & Ye 2017; Miyato et al. 2018):
    D: mean relu(1 - l_real) + mean relu(1 + l_fake);
    G: -mean l_fake.
R1 (Mescheder et al. 2018, `model.r1_gamma`): gamma/2 * mean ||grad_x D(x)||^2 over real images,
    added to either D loss; it pulls D's gradient at the data to zero, so D cannot slowly win.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(loss: str, logits_real: torch.Tensor, logits_fake: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    if loss == "hinge":
        return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()
    logits = torch.cat([logits_real, logits_fake])
    target = torch.cat([torch.full_like(logits_real, real_target), torch.zeros_like(logits_fake)])
    return F.binary_cross_entropy_with_logits(logits, target)


def g_loss(loss: str, logits_fake: torch.Tensor) -> torch.Tensor:
    if loss == "hinge":
        return -logits_fake.mean()
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


def r1_penalty(logits_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """mean over the batch of ||d logit / d x||^2 (real must require grad and feed logits_real). The
    graph is kept (create_graph) so the penalty trains D."""
    (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
