"""Linear4bit: a drop-in nn.Linear whose weight is held in nibble's 4-bit GEMM layout, and swap_linears, which
replaces the nn.Linear modules of a model by it.

    lin4 = Linear4bit.from_linear(linear, format="s4", group=128)     # quantize + repack, on linear's device
    skipped = swap_linears(model, format="s4", group=128)              # in place; returns what it left alone

Inference only: the weight is a set of buffers (no gradient). The layout was repacked for one activation dtype
(`act_dtype`, fp16 or bf16): inputs of another dtype are cast to it and the output is cast back.
"""
import torch
from torch import nn

from . import ops

_GROUPS = (32, 64, 128, 256, ops.PER_CHANNEL)


def can_swap(in_features, out_features, group):
    """Why an [out, in] linear cannot run on nibble's GEMM with this group size, or None if it can."""
    if group not in _GROUPS:
        return f"group {group} is not one of 32, 64, 128, 256, 0 (per-channel)"
    if in_features % 8 != 0:
        return f"in_features {in_features} is not a multiple of 8 (the GEMM reads A in 8-element chunks)"
    if group != ops.PER_CHANNEL and in_features % group != 0:
        return f"in_features {in_features} is not a multiple of the group size {group}"
    if out_features < 1:
        return "no outputs"
    return None


class Linear4bit(nn.Module):
    """y = x @ dequant(W)^T + b with W [out_features, in_features] in 4 bits (nibble::gemm)."""

    def __init__(self, in_features, out_features, bias=True, format="s4", group=128, act_dtype=torch.float16,
                 device=None):
        super().__init__()
        if format not in ops.FORMATS:
            raise ValueError(f"format {format!r}: one of {ops.FORMATS}")
        if act_dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"act_dtype {act_dtype}: float16 or bfloat16")
        why = can_swap(in_features, out_features, group)
        if why:
            raise ValueError(why)
        self.in_features, self.out_features = in_features, out_features
        self.format, self.group, self.act_dtype = format, group, act_dtype
        n_pad, k_pad, groups = ops.gemm_shape(out_features, in_features, group)
        u8 = dict(dtype=torch.uint8, device=device)
        act = dict(dtype=act_dtype, device=device)
        self.register_buffer("codes", torch.zeros(n_pad * k_pad // 2, **u8))
        self.register_buffer("scales", torch.zeros(groups, n_pad, **act))
        self.register_buffer("zeros", torch.zeros(groups, n_pad, **u8) if format == "u4" else torch.zeros(0, **u8))
        self.register_buffer("offsets",
                             torch.zeros(groups, n_pad, **act) if format == "affine_u4" else torch.zeros(0, **u8))
        self.register_buffer("bias", torch.zeros(out_features, **act) if bias else None)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear, format="s4", group=128, act_dtype=None):
        """Quantizes linear.weight (on its device; CPU works too) with scales of act_dtype (default: the weight's
        dtype if 16-bit, else float16) and repacks it for act_dtype activations."""
        w = linear.weight.detach()
        if act_dtype is None:
            act_dtype = w.dtype if w.dtype in (torch.float16, torch.bfloat16) else torch.float16
        mod = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, format=format, group=group,
                  act_dtype=act_dtype, device=w.device)
        # Scales rounded to the activation dtype before the codes are chosen (nibble's rule), so the repack's
        # rounding to act_dtype changes nothing.
        plain = ops.quantize(w.contiguous(), format, group, act_dtype)
        codes, scales, zeros, offsets = ops.repack(*plain, format, group, act_dtype)
        mod.codes.copy_(codes)
        mod.scales.copy_(scales)
        mod.zeros.copy_(zeros)
        mod.offsets.copy_(offsets)
        if linear.bias is not None:
            mod.bias.copy_(linear.bias.detach().to(act_dtype))
        return mod

    def forward(self, x):
        dtype = x.dtype
        y = ops.gemm(x.to(self.act_dtype), self.codes, self.scales, self.zeros, self.offsets, self.bias, self.format,
                     self.group, self.out_features, self.in_features, None)
        return y if dtype == self.act_dtype else y.to(dtype)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"format={self.format}, group={self.group}, act_dtype={self.act_dtype}")


@torch.no_grad()
def swap_linears(model, format="s4", group=128, act_dtype=None, filter=None):
    """Replaces, in place, every nn.Linear of `model` (for which filter(name, module) is true, if given) by
    Linear4bit.from_linear(...). Returns {name: reason} of the nn.Linear modules it left as they were."""
    skipped = {}
    targets = []
    for name, mod in model.named_modules():
        if type(mod) is not nn.Linear:
            continue
        if filter is not None and not filter(name, mod):
            skipped[name] = "filtered out"
            continue
        why = can_swap(mod.in_features, mod.out_features, group)
        if why:
            skipped[name] = why
            continue
        targets.append(name)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Linear4bit.from_linear(getattr(parent, child), format, group, act_dtype))
    return skipped
