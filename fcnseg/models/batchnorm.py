"""BatchNorm in the small trunk: folded into the convolutions for inference, synchronised across DDP processes.

In eval mode a BatchNorm is ``y = gamma (x - mean) / sqrt(var + eps) + beta`` per channel, an affine
map that merges exactly into the convolution before it. In training its statistics come from the
batch; under DDP each process sees only its share, so :class:`GroupBatchNorm2d` sums the statistics
over the process group (on gloo too, where torch's ``SyncBatchNorm`` runs only on GPUs), making
N processes train exactly as one process on the global batch.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every ``conv -> BatchNorm`` pair merged into one convolution.

    The BatchNorm modules become ``nn.Identity`` (so the layer chain and its geometry are unchanged)
    and the convolutions gain a bias. The copy computes the eval-mode outputs of ``model`` (up to
    float rounding) with one layer less per convolution; ``model`` itself is not modified.
    A model without BatchNorm is returned as it is.
    """
    if not has_batch_norm(model):
        return model
    folded = copy.deepcopy(model).eval()
    for parent in folded.modules():
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    if has_batch_norm(folded):
        raise ValueError("a BatchNorm that does not follow a convolution cannot be folded")
    return folded


class _AllReduceSum(torch.autograd.Function):
    """Sum a tensor over the process group; the gradient of every process's copy is the sum of all gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GroupBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole DDP batch (all processes).

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``; without an initialised process
    group, or in eval mode, it is exactly ``nn.BatchNorm2d``. The per-channel sums are all-reduced by a
    differentiable sum, so gradients flow through the shared mean and variance as in a
    single process.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dtype = x.dtype
        xf = x.float()
        count = torch.tensor([xf.numel() / xf.shape[1]], device=x.device, dtype=torch.float32)
        local = torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)), count])
        total = _AllReduceSum.apply(local)
        c = xf.shape[1]
        n = total[-1]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
                self.num_batches_tracked += 1
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(dtype)


def synchronise_batch_norm(model: nn.Module) -> nn.Module:
    """Turn every ``nn.BatchNorm2d`` of ``model`` into a :class:`GroupBatchNorm2d`, in place (weights kept)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GroupBatchNorm2d
    return model


class FrozenStatisticsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics and never updates them (eval mode, even
    inside a net put in training mode); its scale and shift stay parameters that learn.

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``, so a checkpoint of a net trained with it
    loads into a plain one.
    """

    def train(self, mode: bool = True) -> "FrozenStatisticsBatchNorm2d":
        return super().train(False)


def freeze_batch_norm_statistics(model: nn.Module) -> int:
    """Turn every ``nn.BatchNorm2d`` of ``model`` into a :class:`FrozenStatisticsBatchNorm2d`, in place (weights
    kept); returns how many. Call before :func:`synchronise_batch_norm`, which then leaves them alone."""
    count = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = FrozenStatisticsBatchNorm2d
            module.train(False)
            count += 1
    return count
