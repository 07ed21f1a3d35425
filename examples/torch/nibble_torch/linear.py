"""Linear4bit: a drop-in nn.Linear whose weight is held in nibble's 4-bit GEMM layout, and swap_linears, which
replaces the nn.Linear modules of a model by it.

    lin4 = Linear4bit.from_linear(linear, format="s4", group=128)     # quantize + repack, on linear's device
    skipped = swap_linears(model, format="s4", group=128)              # in place; returns what it left alone
    lin4 = Linear4bit.from_gptq(qweight, qzeros, scales, g_idx, group_size=128, bias=b)   # a checkpoint's layer

The from_gptq / from_awq / from_compressed_tensors / from_bnb / from_gguf / from_hqq classmethods import a
quantized checkpoint's layer (importers.py: nibble's plain layout, bit-exactly) and repack it; from_plain takes any
plain layout. An act-order import (GPTQ desc_act, compressed-tensors weight_g_idx) keeps its column permutation as
the buffer `perm` (int32 [in_features]) and permutes the input's columns in forward (ops.permute_columns:
W x = W_import x[perm]); `perm` is None otherwise.

Inference only: the weight is a set of buffers (no gradient). The layout was repacked for one activation dtype
(`act_dtype`, fp16 or bf16): inputs of another dtype are cast to it and the output is cast back.
"""
import torch
from torch import nn

from . import importers, ops

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
                 device=None, act_order=False):
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
        u8 = {"dtype": torch.uint8, "device": device}
        act = {"dtype": act_dtype, "device": device}
        self.register_buffer("codes", torch.zeros(n_pad * k_pad // 2, **u8))
        self.register_buffer("scales", torch.zeros(groups, n_pad, **act))
        self.register_buffer("zeros", torch.zeros(groups, n_pad, **u8) if format == "u4" else torch.zeros(0, **u8))
        self.register_buffer("offsets",
                             torch.zeros(groups, n_pad, **act) if format == "affine_u4" else torch.zeros(0, **u8))
        self.register_buffer("bias", torch.zeros(out_features, **act) if bias else None)
        # act_order: the activations' column permutation of an act-order import (forward: x[..., perm]).
        self.register_buffer("perm", torch.arange(in_features, dtype=torch.int32, device=device) if act_order else None)

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

    @classmethod
    @torch.no_grad()
    def from_plain(cls, codes, scales, zeros, offsets, format, group, *, perm=None, bias=None, act_dtype=None):
        """A Linear4bit of nibble's plain layout (ops.quantize's or an importer's output: codes uint8 [N, K/2],
        scales [N, G], zeros, offsets; `group` is nibble's group size, 0 per-channel), repacked on codes' device
        for act_dtype activations (default: the scales' dtype if 16-bit, else float16; scales and offsets are
        rounded to it). perm: int32 [K] act-order permutation (W x = W_plain x[perm]) or None. bias: [N] or None."""
        n, k = codes.shape[0], codes.shape[1] * 2
        if act_dtype is None:
            act_dtype = scales.dtype if scales.dtype in (torch.float16, torch.bfloat16) else torch.float16
        mod = cls(k, n, bias=bias is not None, format=format, group=group, act_dtype=act_dtype, device=codes.device,
                  act_order=perm is not None)
        g_codes, g_scales, g_zeros, g_offsets = ops.repack(codes, scales, zeros, offsets, format, group, act_dtype)
        mod.codes, mod.scales, mod.zeros, mod.offsets = g_codes, g_scales, g_zeros, g_offsets
        if perm is not None:
            if perm.shape != (k,):
                raise ValueError(f"perm must be [{k}] (in_features), got {tuple(perm.shape)}")
            if perm.is_floating_point() or perm.is_complex() or not torch.equal(
                    perm.detach().cpu().to(torch.int64).sort().values, torch.arange(k)):
                # the GPU permute_columns does not check it (an entry outside [0, K) reads 0): refuse it here
                raise ValueError(f"perm must be a permutation of 0 .. {k - 1}")
            mod.perm.copy_(perm)
        if bias is not None:
            if bias.numel() != n:
                raise ValueError(f"bias must be [{n}] (out_features), got {tuple(bias.shape)}")
            mod.bias.copy_(bias.detach().reshape(n).to(act_dtype))
        return mod

    @classmethod
    def from_imported(cls, weight, *, bias=None, act_dtype=None):
        """A Linear4bit of an importers.ImportedWeight (its format, group and act-order perm)."""
        return cls.from_plain(*weight.plain, weight.format, weight.group, perm=weight.perm, bias=bias,
                              act_dtype=act_dtype)

    # One per checkpoint format: the importer's arguments (importers.py), plus bias and act_dtype.
    @classmethod
    def from_gptq(cls, qweight, qzeros, scales, g_idx=None, *, bias=None, act_dtype=None, **kwargs):
        """GPTQ (importers.import_gptq: group_size, sym, checkpoint_format, check); act order kept as `perm`."""
        return cls.from_imported(importers.import_gptq(qweight, qzeros, scales, g_idx, **kwargs), bias=bias,
                                 act_dtype=act_dtype)

    @classmethod
    def from_awq(cls, qweight, qzeros, scales, *, bias=None, act_dtype=None, **kwargs):
        """AutoAWQ GEMM (importers.import_awq: group_size)."""
        return cls.from_imported(importers.import_awq(qweight, qzeros, scales, **kwargs), bias=bias,
                                 act_dtype=act_dtype)

    @classmethod
    def from_compressed_tensors(cls, weight_packed, weight_scale, weight_shape, weight_zero_point=None,
                                weight_g_idx=None, *, bias=None, act_dtype=None, **kwargs):
        """compressed-tensors pack-quantized (importers.import_compressed_tensors: strategy, group_size, symmetric,
        check); act order kept as `perm`."""
        w = importers.import_compressed_tensors(weight_packed, weight_scale, weight_shape, weight_zero_point,
                                                weight_g_idx, **kwargs)
        return cls.from_imported(w, bias=bias, act_dtype=act_dtype)

    @classmethod
    def from_bnb(cls, weight, absmax, quant_map, shape, *, bias=None, act_dtype=None, **kwargs):
        """bitsandbytes 4-bit (importers.import_bnb: quant_type, blocksize, nested_*); fp32 scales rounded to
        act_dtype (default float16)."""
        return cls.from_imported(importers.import_bnb(weight, absmax, quant_map, shape, **kwargs), bias=bias,
                                 act_dtype=act_dtype)

    @classmethod
    def from_gguf(cls, data, type, n, k, *, bias=None, act_dtype=None):
        """GGUF Q4_0 / Q4_1 / Q4_K (importers.import_gguf); act_dtype default float16."""
        return cls.from_imported(importers.import_gguf(data, type, n, k), bias=bias, act_dtype=act_dtype)

    @classmethod
    def from_hqq(cls, W_q, scale, zero, shape, *, bias=None, act_dtype=None, **kwargs):
        """HQQ 4-bit axis 1 (importers.import_hqq: group_size); fp32 scales / offsets rounded to act_dtype (default
        float16)."""
        return cls.from_imported(importers.import_hqq(W_q, scale, zero, shape, **kwargs), bias=bias,
                                 act_dtype=act_dtype)

    def forward(self, x):
        dtype = x.dtype
        x = x.to(self.act_dtype)
        if self.perm is not None:
            x = ops.permute_columns(x, self.perm)
        y = ops.gemm(x, self.codes, self.scales, self.zeros, self.offsets, self.bias, self.format,
                     self.group, self.out_features, self.in_features, None)
        return y if dtype == self.act_dtype else y.to(dtype)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"format={self.format}, group={self.group}, act_dtype={self.act_dtype}"
                + (", act_order=True" if self.perm is not None else ""))


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
