"""The training losses: labels, knowledge distillation from a teacher's logits, and
hidden-state MSE."""

from __future__ import annotations

import torch.nn.functional as F


def soft_loss(student, teacher, temperature: float, num_labels: int):
    """T^2 KL(teacher || student) on logits (MSE for regression)."""
    if num_labels == 1:
        return F.mse_loss(student, teacher)
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student / t, -1),
        F.log_softmax(teacher / t, -1),
        reduction="batchmean",
        log_target=True,
    )
    return kl * t * t


def distill_loss(student, teacher, labels, kd, num_labels, s_hidden=None, t_hidden=None):
    """alpha CE + (1 - alpha) T^2 KL(teacher || student) (+ hidden-state MSE); the task
    loss alone without a teacher."""
    task = (
        F.mse_loss(student.squeeze(-1), labels.float())
        if num_labels == 1
        else F.cross_entropy(student, labels)
    )
    if teacher is None:
        return task
    soft = soft_loss(student, teacher, kd.temperature, num_labels)
    loss = kd.alpha * task + (1 - kd.alpha) * soft
    if kd.hidden_mse and s_hidden is not None and t_hidden is not None:
        loss = loss + kd.hidden_mse * sum(
            F.mse_loss(s, t) for s, t in zip(s_hidden, t_hidden, strict=False)
        ) / len(s_hidden)
    return loss
