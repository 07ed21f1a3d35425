#!/usr/bin/env python3
"""End-to-end decode of a Llama-3-8B-shaped model with random weights (issue 12 item 4): tokens/s and peak memory
at batch 1 and 16 with nibble's Linear4bit, bf16 nn.Linear and bitsandbytes NF4, a static KV cache, CUDA graphs.

On a GPU machine, from the repository root (the first import of examples/torch builds nibble's extension if needed:
2-3 minutes on 16 cores, not counted below; bitsandbytes where it is importable, e.g. PYTHONPATH=.whl/site):

    python3 benchmarks/e2e_decode.py                       # bf16, nibble, bnb_nf4 at batch 1 and 16
    python3 benchmarks/e2e_decode.py --layers 4 --steps 16 # a quick run
    python3 benchmarks/e2e_decode.py --tiny --device cpu   # a smoke test without a GPU (no graphs, no events)
    python3 benchmarks/plot.py                             # then benchmarks/e2e_decode.png from the JSON

Writes benchmarks/results/<device>-<date>-<commit>-e2e.json (after every variant, with context.complete false until
the end, so a run cut off keeps what it measured; and .md, the table as printed, at the end); --out changes the JSON
path. Expected on an H200 for the default run (not yet measured): under 4 minutes, most of it imports and first-call
set-up. The random init of the 16 GB bf16 model on the GPU takes about a second and happens 4 times (bf16, whose
model nibble's dequantized reference reuses; one for nibble's conversion; two for bnb_nf4's reference and
conversion); quantizing the 128 layer linears with nibble or bitsandbytes on the GPU takes seconds; each variant and
batch size runs ~200 decode steps of about 1-40 ms, and each variant two or three eager 128-token prefills (check,
reference, timing). Peak memory about 17 GiB for bf16 (the model, its KV cache, the prefill's activations), 5-10 GiB
for the 4-bit variants.

The model (plain PyTorch, no transformers): token embedding; per layer RMSNorm -> attention (one fused qkv Linear
hidden -> (heads + 2 kv_heads) * head_dim, RoPE theta 500000 rotate-half style, GQA: the query heads of a kv head
are folded into its query rows so SDPA sees one kv head per group and no KV copy is made) -> o Linear, residual,
RMSNorm -> SwiGLU MLP (one fused gate+up Linear hidden -> 2 * intermediate, down Linear), residual; final RMSNorm and
lm_head. Llama-3-8B: hidden 4096, intermediate 14336, 32 layers, 32 heads, 8 kv heads, head_dim 128, vocab 128256,
untied embeddings. Weights normal(0, 0.02) drawn in bf16 directly on the device from one seeded generator (printed;
RMSNorm weights 1), so no fp32 copy of the 8B model exists. The KV cache is static: per layer K and V
[batch, kv_heads, max_seq, head_dim], written with index_copy_ at positions held in a device tensor; attention is
F.scaled_dot_product_attention over the whole cache with a boolean mask hiding the slots after each query's position
(so a decode step costs the same at every position: max_seq defaults to prompt + steps rounded up to 64).

Variants. Only the decoder layers' four linears (qkv, o, gate_up, down: 128 in the 8B model) are quantized; the
embedding, the final norm and lm_head stay bf16 in every variant.
  bf16     nn.Linear (cuBLAS through torch)
  nibble   nibble_torch.swap_linears(model.layers, format="s4", group=128, act_dtype=bfloat16): Linear4bit, s4 with
           bf16 group-128 scales (4.125 bits per weight), nibble::gemm through the PyTorch op
  bnb_nf4  bitsandbytes.functional.quantize_4bit(quant_type="nf4", blocksize=64, compress_statistics=True: double
           quant) + bitsandbytes.matmul_4bit, compute dtype bf16 (skipped, with the reason, if bitsandbytes is not
           importable)
The quantized variants are made FROM the bf16 model of the same seed: its layer linears are converted in place (the
bf16 weight of each freed as it is replaced); a variant that finds the model already converted regenerates it.

Method, per variant and batch size: prefill a random prompt (eager, not timed; seeded, the same for every variant);
the first decode input is a fixed random token per row (not the prefill's argmax, so every variant decodes from the
same input). One decode step (tokens [batch, 1] in, logits out, K / V written at the position tensor, the greedy
argmax of the logits written back as the next input token and into a token history, the position incremented, all on
the device) is run 3 times eagerly on a side stream (warm-up, as PyTorch's CUDA graph notes say), then captured in
one torch.cuda.CUDAGraph. Timing: reset the position and the input tokens (the prefill's cache entries are kept;
slots at and after the position are rewritten before they are read), then `steps` replays between two CUDA events;
the median of `reps` such runs. tokens/s = batch * steps / seconds; ms/token = milliseconds per decode step. If
capture fails the same steps are timed eagerly and the row says "eager (...)" with the exception. The first graph
replay's logits are compared with the first eager warm-up step's (graph_vs_eager_rel_err, expected 0).
Memory: torch.cuda.max_memory_allocated() with the peak reset before each batch size's prefill (weights + KV cache +
prefill and decode activations + the graph's pool), the decode-only peak (reset after the prefill), and the bytes of
the decoder layers' parameters + buffers (+ bitsandbytes' quant states) alone.
Correctness (batch 1, eager): prefill logits of every prompt position and the first decode step's logits against the
bf16 model's on the same prompt and weights: relative Frobenius error and top-1 agreement (recorded, never a
failure); and how many greedy tokens of the timed run agree with bf16's from the start. 4-bit random normal weights
are far from their bf16 values (per weight, relative Frobenius error 11% for s4 g128, 9% for NF4 b64), so these
logits differ by tens of % (measured on the CPU, tiny and 1-layer 8B-shaped models: 23-31%). To tell the
quantization's error from the GEMM's, each quantized variant is also compared with the bf16 model whose layer weights
are that variant's 4-bit round trip (the same quantizer, dequantized by torch and rounded to bf16): fakequant_* is
that model vs bf16 (the quantization's own error), vs_fakequant_* the variant vs that model (its GEMM's rounding and
summation order alone: expect well under 1%; a large value is a wrong kernel).

JSON: {"context": {versions (torch, cuda, bitsandbytes, nibble_commit, nibble_rev = git rev-parse HEAD, ...), device,
date, command, config, method, notes}, "results": [{"variant", "batch", "status", "tokens_per_s", "ms_per_token",
"speedup_vs_bf16", "steps", "reps", "rep_s", "timing", "peak_mem_bytes", "decode_peak_mem_bytes",
"layer_weight_bytes", "other_weight_bytes", "kv_cache_bytes", "build_s", "convert_s", "prefill_s",
"build_peak_mem_bytes", "graph_vs_eager_rel_err", "logits_rel_err", "top1_agree", "prefill_rel_err",
"prefill_top1_agree", "fakequant_rel_err", "fakequant_top1_agree", "fakequant_prefill_rel_err",
"fakequant_prefill_top1_agree", "vs_fakequant_rel_err", "vs_fakequant_prefill_rel_err", "greedy_match_steps",
"tokens_row0"}]} (what benchmarks/plot.py reads). Nulls, or no key, where a value does not apply (CPU: no memory).
"""
import argparse
import dataclasses
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import peers  # noqa: E402  (versions(), tensors_bytes(), nibble_ops(): the same as the peers benchmark)

SEED = 20261203
VARIANTS = ("bf16", "nibble", "bnb_nf4")
QUANT = {
    "bf16": "nn.Linear bf16 (no quantization)",
    "nibble": "nibble Linear4bit s4 group 128, bf16 scales, act_dtype bfloat16 (4.125 bits per weight)",
    "bnb_nf4": "bitsandbytes quantize_4bit nf4 blocksize 64, compress_statistics=True (double quant), matmul_4bit, "
               "compute dtype bf16",
}
NOTE = "lm_head, the token embedding and the RMSNorm weights are bf16 in every variant; only the layers' linears vary"


@dataclasses.dataclass
class Config:
    hidden: int = 4096
    intermediate: int = 14336
    layers: int = 32
    heads: int = 32
    kv_heads: int = 8
    head_dim: int = 128
    vocab: int = 128256
    rope_theta: float = 500000.0
    eps: float = 1e-5


LLAMA3_8B = Config()
TINY = Config(hidden=256, intermediate=768, layers=2, heads=4, kv_heads=2, head_dim=64, vocab=1024)


# ---- the model ------------------------------------------------------------------------------------------------------


def torch_mod():
    import torch

    return torch


class KVCache:
    """Static per-layer K and V [batch, kv_heads, max_seq, head_dim] (not module buffers: not layer weights)."""

    def __init__(self, cfg, batch, max_seq, device, dtype):
        torch = torch_mod()
        shape = (batch, cfg.kv_heads, max_seq, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.layers)]

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


def build_model(cfg, max_seq, device, seed):
    """The bf16 decoder on `device`, weights normal(0, 0.02) from a generator seeded with `seed` (in bf16 on the
    device: parameters are made on the meta device, allocated empty, then filled in place)."""
    torch = torch_mod()
    import torch.nn.functional as F
    from torch import nn

    class RMSNorm(nn.Module):
        def __init__(self, dim, eps):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim, dtype=torch.bfloat16))
            self.eps = eps

        def forward(self, x):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight

    def rope(x, cos, sin):
        """x [B, h, T, d]; cos / sin [T, d] fp32 (rotate-half: pairs (i, i + d/2))."""
        xf = x.float()
        x1, x2 = xf.chunk(2, dim=-1)
        return (xf * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(cfg.hidden, (cfg.heads + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
            self.o = nn.Linear(cfg.heads * cfg.head_dim, cfg.hidden, bias=False)

        def forward(self, x, positions, cos, sin, mask, k_cache, v_cache):
            b, t, _ = x.shape
            nh, nkv, hd = cfg.heads, cfg.kv_heads, cfg.head_dim
            q, k, v = self.qkv(x).split([nh * hd, nkv * hd, nkv * hd], dim=-1)
            q = rope(q.view(b, t, nh, hd).transpose(1, 2), cos, sin)
            k = rope(k.view(b, t, nkv, hd).transpose(1, 2), cos, sin)
            v = v.view(b, t, nkv, hd).transpose(1, 2)
            k_cache.index_copy_(2, positions, k)  # the cache at the device-held positions
            v_cache.index_copy_(2, positions, v)
            # GQA: query head g * rep + r uses kv head g (as Llama's repeat_kv); fold the rep query heads of a kv head
            # into its rows (row r * t + i is token i of head r), so SDPA runs on nkv heads with the cache as it is;
            # mask is [rep * t, max_seq] in that row order.
            qg = q.reshape(b, nkv, (nh // nkv) * t, hd)
            o = F.scaled_dot_product_attention(qg, k_cache, v_cache, attn_mask=mask)
            # (reshape: fused SDPA kernels return o with [B, L, H, D] strides, which no view can regroup)
            return self.o(o.reshape(b, nh, t, hd).transpose(1, 2).reshape(b, t, nh * hd))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_up = nn.Linear(cfg.hidden, 2 * cfg.intermediate, bias=False)
            self.down = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

        def forward(self, x):
            gate, up = self.gate_up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm = RMSNorm(cfg.hidden, cfg.eps)
            self.attn = Attention()
            self.mlp_norm = RMSNorm(cfg.hidden, cfg.eps)
            self.mlp = MLP()

        def forward(self, x, positions, cos, sin, mask, k_cache, v_cache):
            h = x + self.attn(self.attn_norm(x), positions, cos, sin, mask, k_cache, v_cache)
            return h + self.mlp(self.mlp_norm(h))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg.layers))
            self.norm = RMSNorm(cfg.hidden, cfg.eps)
            self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)

        def forward(self, tokens, positions, cache, last_only=False):
            """tokens [B, T] at positions [T] (a device tensor) -> logits [B, T or 1, vocab]; writes the cache."""
            h = self.embed(tokens)
            # [T, max_seq]: slot s is visible to a query at position p if s <= p; repeated for the folded query heads
            mask = (self.slots[None, :] <= positions[:, None]).repeat(cfg.heads // cfg.kv_heads, 1)
            cos, sin = self.cos[positions], self.sin[positions]
            for i, layer in enumerate(self.layers):
                h = layer(h, positions, cos, sin, mask, cache.k[i], cache.v[i])
            if last_only:
                h = h[:, -1:]
            return self.lm_head(self.norm(h))

    with torch.device("meta"):
        model = Decoder().to(torch.bfloat16)
    model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim))
        freqs = torch.outer(torch.arange(max_seq, dtype=torch.float64), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        model.register_buffer("cos", emb.cos().float().to(device), persistent=False)
        model.register_buffer("sin", emb.sin().float().to(device), persistent=False)
        model.register_buffer("slots", torch.arange(max_seq, device=device), persistent=False)
    model.eval()
    return model


# ---- the quantized variants -----------------------------------------------------------------------------------------


def nibble_torch():
    peers.nibble_ops()  # puts examples/torch on sys.path and builds / loads the extension, as peers.py does
    import nibble_torch as nt

    return nt


def convert_nibble(model):
    torch = torch_mod()
    nt = nibble_torch()
    skipped = nt.swap_linears(model.layers, format="s4", group=128, act_dtype=torch.bfloat16)
    if skipped:
        raise RuntimeError(f"swap_linears left linears unswapped: {skipped}")


def bnb_modules():
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbF
    except Exception as e:  # noqa: BLE001
        raise Skip(f"bitsandbytes not importable ({type(e).__name__}: {e})") from None
    return bnb, bnbF


def convert_bnb(model):
    from torch import nn

    bnb, bnbF = bnb_modules()

    class BnbNf4Linear(nn.Module):
        """y = matmul_4bit(x, NF4 b64 double-quantized W^T), computed in x's dtype (bf16)."""

        def __init__(self, linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            packed, qs = bnbF.quantize_4bit(linear.weight.detach().contiguous(), blocksize=64,
                                            compress_statistics=True, quant_type="nf4")
            self.register_buffer("packed", packed)
            self.quant_state = qs  # absmax (8-bit codes), the nested state (fp32 absmax, code), offset

        def forward(self, x):
            return bnb.matmul_4bit(x, self.packed.t(), quant_state=self.quant_state)

    targets = [name for name, m in model.layers.named_modules() if type(m) is nn.Linear]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.layers.get_submodule(parent_name)
        setattr(parent, child, BnbNf4Linear(getattr(parent, child)))  # the bf16 linear is freed here


def fake_quantize(model, variant):
    """In place: every nn.Linear weight of model.layers becomes its 4-bit round trip through the variant's quantizer
    (nibble: nibble::quantize s4 g128 with bf16 scales, the call Linear4bit.from_linear makes, dequantized q * s in
    fp32; bitsandbytes: quantize_4bit / dequantize_4bit), rounded to bf16 (nibble's GEMM and bitsandbytes' both
    multiply bf16 dequantized weights)."""
    torch = torch_mod()
    from torch import nn

    with torch.no_grad():
        for m in model.layers.modules():
            if type(m) is not nn.Linear:
                continue
            w = m.weight.detach().contiguous()
            if variant == "nibble":
                codes, scales, _, _ = nibble_torch().ops.quantize(w, "s4", 128, torch.bfloat16)
                c = codes.to(torch.int16)
                q = torch.stack((c & 15, c >> 4), dim=-1).reshape(w.shape)  # even k in the low nibble
                q = torch.where(q >= 8, q - 16, q)  # two's complement s4
                wq = (q.float() * scales.float().repeat_interleave(128, dim=1)).to(torch.bfloat16)
                del codes, scales, c, q
            elif variant == "bnb_nf4":
                _, bnbF = bnb_modules()
                packed, qs = bnbF.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
                wq = bnbF.dequantize_4bit(packed, qs).to(torch.bfloat16)
                del packed, qs
            else:
                raise ValueError(variant)
            m.weight.copy_(wq.view_as(m.weight))
            del w, wq


def module_bytes(mod):
    """Parameters + buffers of `mod`, plus the tensors of bitsandbytes quant states held by its modules."""
    n = sum(t.numel() * t.element_size() for t in list(mod.parameters()) + list(mod.buffers()))
    for m in mod.modules():
        qs = getattr(m, "quant_state", None)
        if qs is not None:
            n += peers.tensors_bytes(qs)
    return n


class Skip(Exception):
    pass


# ---- decoding -------------------------------------------------------------------------------------------------------


class Decode:
    """Static state of one batch size: cache, input tokens [B, 1], position [1] (device), token history."""

    def __init__(self, model, cfg, batch, max_seq, prompt, first, device):
        torch = torch_mod()
        self.model, self.batch, self.p = model, batch, prompt.shape[1]
        self.cache = KVCache(cfg, batch, max_seq, device, torch.bfloat16)
        self.prompt = prompt[:batch].to(device)
        self.first = first[:batch].to(device)
        self.tokens = self.first.clone()
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        self.hist = torch.zeros(batch, max_seq, dtype=torch.long, device=device)
        self.prompt_positions = torch.arange(self.p, device=device)

    def prefill(self, last_only=True):
        return self.model(self.prompt, self.prompt_positions, self.cache, last_only=last_only)

    def reset(self):
        """Back to the first decode step: position = prompt length, inputs = the fixed first tokens (the prefill's
        cache entries stay; every later slot is rewritten before a query can see it)."""
        self.pos.fill_(self.p)
        self.tokens.copy_(self.first)

    def step(self):
        """One autoregressive step, all on the device: logits of the current tokens at self.pos, their argmax
        becomes the next input and goes into the history, the position moves on."""
        logits = self.model(self.tokens, self.pos, self.cache)  # [B, 1, vocab]
        nxt = logits[:, -1].argmax(dim=-1, keepdim=True)
        self.tokens.copy_(nxt)
        self.hist.index_copy_(1, self.pos, nxt)
        self.pos.add_(1)
        return logits


def rel_err(x, ref):
    torch = torch_mod()
    x, ref = x.double().cpu(), ref.double().cpu()
    return (torch.linalg.norm(x - ref) / torch.linalg.norm(ref)).item()


def check_logits(model, cfg, max_seq, prompt, first, device):
    """Batch 1, eager: (prefill logits [P, vocab], first decode step's logits [vocab]) in fp32 on the CPU."""
    torch = torch_mod()
    d = Decode(model, cfg, 1, max_seq, prompt, first, device)
    with torch.no_grad():
        pre = d.prefill(last_only=False)[0].float().cpu()
        d.reset()
        step = d.step()[0, -1].float().cpu()
    del d
    return pre, step


def compare(chk, ref):
    pre, step = chk
    rpre, rstep = ref
    return dict(
        logits_rel_err=rel_err(step, rstep),
        top1_agree=bool(step.argmax().item() == rstep.argmax().item()),
        prefill_rel_err=rel_err(pre, rpre),
        prefill_top1_agree=(pre.argmax(-1) == rpre.argmax(-1)).double().mean().item(),
    )


def run_batch(model, cfg, batch, args, prompt, first, device):
    """Prefill, warm-up, capture, time one batch size. Returns the row's measured fields."""
    torch = torch_mod()
    cuda = device == "cuda"
    row = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    d = Decode(model, cfg, batch, args.max_seq, prompt, first, device)
    row["kv_cache_bytes"] = d.cache.nbytes()
    with torch.no_grad():
        t0 = time.perf_counter()
        d.prefill()
        if cuda:
            torch.cuda.synchronize()
        row["prefill_s"] = time.perf_counter() - t0
        if cuda:
            prefill_peak = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()

        # Warm-up: eager steps (on a side stream for CUDA, as PyTorch's graph notes ask); the first one's logits
        # are the eager reference of the graph's first replay.
        d.reset()
        if cuda:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                eager_first = d.step().clone()
                for _ in range(args.warmup - 1):
                    d.step()
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
        else:
            eager_first = d.step().clone()
            for _ in range(args.warmup - 1):
                d.step()

        graph, out, timing = None, None, "eager (cpu: no CUDA graph)"
        if cuda:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out = d.step()
                timing = "graph"
            except Exception as e:  # noqa: BLE001
                torch.cuda.synchronize()
                graph = None
                timing = f"eager (graph capture failed: {type(e).__name__}: {str(e)[:300]})"
                print(f"  batch {batch}: {timing}")

        launch = graph.replay if graph is not None else d.step

        # The first step's logits from the timed path (graph replay or eager) against the eager warm-up's.
        d.reset()
        first_logits = launch()
        if graph is not None:
            first_logits = out  # replay() returns nothing: the captured step's output tensor holds the logits
        row["graph_vs_eager_rel_err"] = rel_err(first_logits, eager_first)
        del eager_first, first_logits

        rep_s = []
        for _ in range(args.reps):
            d.reset()
            if cuda:
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(args.steps):
                    launch()
                stop.record()
                stop.synchronize()
                rep_s.append(start.elapsed_time(stop) / 1000.0)
            else:
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    launch()
                rep_s.append(time.perf_counter() - t0)
        final_pos = int(d.pos.item())
        if final_pos != d.p + args.steps:
            raise RuntimeError(f"position after {args.steps} steps is {final_pos}, expected {d.p + args.steps}")
        sec = statistics.median(rep_s)
        row.update(
            status="ok",
            tokens_per_s=batch * args.steps / sec,
            ms_per_token=1000.0 * sec / args.steps,
            steps=args.steps,
            reps=args.reps,
            rep_s=rep_s,
            timing=timing,
            tokens_row0=d.hist[0, d.p:d.p + args.steps].tolist(),
        )
        if cuda:
            torch.cuda.synchronize()
            row["decode_peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    del launch, graph, out, d
    gc.collect()
    if cuda:
        # the batch's peak (weights + cache + prefill + decode activations + graph pool) and the decode-only one
        row["peak_mem_bytes"] = max(prefill_peak, row["decode_peak_mem_bytes"])
        torch.cuda.empty_cache()
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description="end-to-end decode benchmark (see the module docstring)")
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 16], help="batch sizes (default 1 16)")
    ap.add_argument("--steps", type=int, default=64, help="decode steps per timed run (default 64)")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens, prefilled eagerly (default 128)")
    ap.add_argument("--max-seq", type=int, help="KV cache slots (default: prompt + steps + 1 rounded up to 64)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--layers", type=int, help="decoder layers (default 32, or 2 with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="2 layers, hidden 256, 4 heads / 2 kv heads, vocab 1024")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: eager only, for testing")
    ap.add_argument("--reps", type=int, default=3, help="timed runs of --steps steps; the median is reported")
    ap.add_argument("--warmup", type=int, default=3, help="eager warm-up steps before the capture")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", help="JSON path (default benchmarks/results/<device>-<date>-<commit>-e2e.json)")
    args = ap.parse_args(argv)

    import torch

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("e2e_decode.py: no CUDA device (use --device cpu --tiny for a smoke test)")
    if args.warmup < 1 or args.steps < 1 or args.reps < 1 or args.prompt < 1:
        sys.exit("e2e_decode.py: --steps, --prompt, --reps and --warmup must be >= 1")
    cfg = dataclasses.replace(TINY if args.tiny else LLAMA3_8B)
    if args.layers is not None:
        cfg.layers = args.layers
    need = args.prompt + max(args.steps, args.warmup)
    if args.max_seq is None:
        args.max_seq = (need + 1 + 63) // 64 * 64
    if args.max_seq < need:
        sys.exit(f"e2e_decode.py: --max-seq {args.max_seq} < prompt + steps = {need}")
    batches = sorted(set(args.batch))

    ctx = peers.versions()
    try:
        ctx["nibble_rev"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                           timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        ctx["nibble_rev"] = "?"
    if os.environ.get("NIBBLE_COMMIT"):  # (peers.versions: the caller's commit, where .git is not the tree's)
        ctx["nibble_rev"] = os.environ["NIBBLE_COMMIT"]
    if device == "cpu":
        ctx["device"] = "cpu"
    ctx["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    ctx["command"] = " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    ctx["config"] = dict(dataclasses.asdict(cfg), model="tiny" if args.tiny else "Llama-3-8B shape", dtype="bfloat16",
                         batches=batches, steps=args.steps, prompt=args.prompt, max_seq=args.max_seq, reps=args.reps,
                         warmup=args.warmup, seed=args.seed, variants=args.variants,
                         quantization={v: QUANT[v] for v in args.variants})
    ctx["method"] = (
        "random weights normal(0, 0.02) in bf16 on the device (seeded); eager prefill of a random prompt; one decode "
        "step (greedy argmax fed back, KV written at a device position tensor, position incremented on the device) "
        f"captured in a CUDA graph after {args.warmup} eager warm-up steps on a side stream; {args.steps} replays "
        f"between CUDA events, median of {args.reps} runs, each from the same position; tokens/s = batch * steps / s. "
        "Memory: max_memory_allocated with the peak reset before each batch's prefill; layer weights = parameters + "
        "buffers (+ bnb quant states) of the decoder layers. Check: batch 1, eager, logits vs bf16 of the same seed."
    )
    ctx["notes"] = NOTE
    print(json.dumps(ctx, indent=1))
    print(f"seed {args.seed}; {NOTE}")

    gen = torch.Generator().manual_seed(args.seed + 1)  # inputs: the same on every device and for every variant
    prompt = torch.randint(0, cfg.vocab, (max(batches), args.prompt), generator=gen)
    first = torch.randint(0, cfg.vocab, (max(batches), 1), generator=gen)

    results = []
    out = args.out
    if out is None:  # the name peers.py gives its JSON, with -e2e
        dev = ctx.get("device", "gpu").split()[-1].lower().replace("-", "")
        out = os.path.join(HERE, "results", f"{dev}-{ctx['date'][:10]}-{ctx['nibble_commit']}-e2e.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    def write(final):
        """The JSON so far (after every variant, so a run cut off keeps what it measured; complete: false)."""
        for r in results:
            base = next((x for x in results if x["variant"] == "bf16" and x["batch"] == r["batch"]
                         and x.get("tokens_per_s")), None)
            r["speedup_vs_bf16"] = r["tokens_per_s"] / base["tokens_per_s"] if base and r.get("tokens_per_s") else None
        ctx["wall_s"] = round(time.time() - t_start, 1)
        ctx["complete"] = final
        doc = {"context": ctx, "results": results}
        with open(out, "w") as f:
            json.dump(doc, f, indent=1)
        return doc

    ref = None  # bf16 check logits (CPU)
    ref_tokens = None  # bf16's greedy tokens at batch 1
    model, model_is_bf16 = None, False
    t_start = time.time()

    def free_model():
        nonlocal model, model_is_bf16
        model, model_is_bf16 = None, False
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    def bf16_model():
        """A bf16 model of the seed (the one in hand if it is still bf16); returns the seconds it took."""
        nonlocal model, model_is_bf16
        t0 = time.perf_counter()
        if not model_is_bf16:
            free_model()
            model = build_model(cfg, args.max_seq, device, args.seed)
            model_is_bf16 = True
            if device == "cuda":
                torch.cuda.synchronize()
        return time.perf_counter() - t0

    for variant in args.variants:
        base = dict(variant=variant, quantization=QUANT[variant], convert_s=None)
        print(f"\n== {variant}: {QUANT[variant]}")
        try:
            if variant == "bnb_nf4":
                bnb_modules()  # skip before building anything
            if variant == "nibble":
                nibble_torch()  # build / load the extension before the model takes the GPU's memory and time
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            build_s = bf16_model()
            print(f"  bf16 model ready in {build_s:.1f} s ({module_bytes(model.layers) / 2**30:.2f} GiB of layers)")
            if ref is None:
                ref = check_logits(model, cfg, args.max_seq, prompt, first, device)
            fq = None
            if variant != "bf16":
                # The quantization's own error, without the variant's GEMM: the bf16 model with each layer weight
                # replaced by its 4-bit round trip (the variant's quantizer, dequantized by torch); then a fresh bf16
                # model for the variant itself.
                model_is_bf16 = False
                fake_quantize(model, variant)
                fq = check_logits(model, cfg, args.max_seq, prompt, first, device)
                c = compare(fq, ref)
                base.update(fakequant_rel_err=c["logits_rel_err"], fakequant_top1_agree=c["top1_agree"],
                            fakequant_prefill_rel_err=c["prefill_rel_err"],
                            fakequant_prefill_top1_agree=c["prefill_top1_agree"])
                print(f"  bf16 with {variant}'s dequantized weights vs bf16: first decode step rel err "
                      f"{c['logits_rel_err']:.4f}, prefill rel err {c['prefill_rel_err']:.4f}")
                build_s += bf16_model()
                t0 = time.perf_counter()
                model_is_bf16 = False
                with torch.no_grad():
                    if variant == "nibble":
                        convert_nibble(model)
                    else:
                        convert_bnb(model)
                gc.collect()
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                base["convert_s"] = time.perf_counter() - t0
            base.update(build_s=build_s, layer_weight_bytes=module_bytes(model.layers),
                        other_weight_bytes=module_bytes(model) - module_bytes(model.layers))
            if device == "cuda":
                base["build_peak_mem_bytes"] = torch.cuda.max_memory_allocated()
            if fq is not None:
                print(f"  converted in {base['convert_s']:.1f} s: {base['layer_weight_bytes'] / 2**30:.2f} GiB of "
                      "layers")
            chk = ref if variant == "bf16" else check_logits(model, cfg, args.max_seq, prompt, first, device)
            base.update(compare(chk, ref))
            print(f"  check vs bf16 (batch 1): first decode step rel err {base['logits_rel_err']:.4f}, top-1 "
                  f"{'agrees' if base['top1_agree'] else 'differs'}; prefill rel err {base['prefill_rel_err']:.4f}, "
                  f"top-1 agreement {100 * base['prefill_top1_agree']:.1f}%")
            if fq is not None:
                c = compare(chk, fq)
                base.update(vs_fakequant_rel_err=c["logits_rel_err"], vs_fakequant_prefill_rel_err=c["prefill_rel_err"])
                print(f"  {variant} vs bf16 with its dequantized weights (its GEMM's own error): first decode step "
                      f"rel err {c['logits_rel_err']:.4f}, prefill {c['prefill_rel_err']:.4f}")
        except Skip as e:
            print(f"  skipped: {e}")
            results += [dict(base, batch=b, status=f"skipped: {e}") for b in batches]
            write(False)
            continue
        except Exception as e:  # noqa: BLE001
            msg = f"error: {type(e).__name__}: {str(e)[:300]}"
            if device == "cpu" and variant == "nibble" and isinstance(e, NotImplementedError):
                msg = "error: nibble::gemm has no CPU kernel (CUDA only): " + str(e).split(". ")[0][:160]
            print(f"  {msg}")
            results += [dict(base, batch=b, status=msg) for b in batches]
            write(False)
            free_model()
            continue
        for b in batches:
            row = dict(base, batch=b)
            try:
                row.update(run_batch(model, cfg, b, args, prompt, first, device))
                if b == 1:
                    if variant == "bf16":
                        ref_tokens = row["tokens_row0"]
                    if ref_tokens is not None:
                        n = 0
                        while n < len(ref_tokens) and row["tokens_row0"][n] == ref_tokens[n]:
                            n += 1
                        row["greedy_match_steps"] = n
                peak = row.get("peak_mem_bytes")
                print(f"  batch {b:3d}: {row['tokens_per_s']:10.1f} tokens/s, {row['ms_per_token']:8.3f} ms/step "
                      f"({row['timing'][:40]}), graph vs eager {row['graph_vs_eager_rel_err']:.2e}"
                      + (f", peak {peak / 2**30:.2f} GiB" if peak else ""))
            except Exception as e:  # noqa: BLE001
                row["status"] = f"error: {type(e).__name__}: {str(e)[:300]}"
                print(f"  batch {b}: {row['status']}")
            results.append(row)
            if row.get("status") != "ok":  # the failed batch's cache / graph went with the exception: give it back
                gc.collect()
                if device == "cuda":
                    try:
                        torch.cuda.synchronize()
                        torch.cuda.empty_cache()
                    except Exception as e:  # noqa: BLE001  (a sticky CUDA error: later rows will say so)
                        print(f"  after batch {b}: {type(e).__name__}: {e}")
        write(False)
    free_model()
    doc = write(True)
    md = markdown(doc)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(md)
    print()
    print(md)
    print(f"wrote {out} and {os.path.splitext(out)[0]}.md ({ctx['wall_s']} s)")


def cell(text):
    """One markdown table cell: exception texts lose their newlines and pipes."""
    return " ".join(str(text).split()).replace("|", "/")


def gib(b):
    if b is None:
        return "-"
    return f"{b / 2**30:.2f}" if b >= 2**30 / 10 else f"{b / 2**30:.4f}"


def markdown(doc):
    ctx = doc["context"]
    c = ctx.get("config", {})
    lines = [
        f"End-to-end decode, {c.get('model')} ({c.get('layers')} layers, hidden {c.get('hidden')}, random weights), "
        f"{ctx.get('device', '?')}, torch {ctx.get('torch')} (CUDA {ctx.get('cuda')}), bitsandbytes "
        f"{ctx.get('bitsandbytes')}, nibble {ctx.get('nibble_commit')}, {ctx.get('date')}. Prompt {c.get('prompt')} "
        f"(eager prefill), {c.get('steps')} greedy decode steps per run, median of {c.get('reps')} runs; static KV "
        f"cache of {c.get('max_seq')} slots. {ctx.get('notes', NOTE)}.",
        "",
        "| variant | batch | tokens/s | ms/token | speedup vs bf16 | peak GiB | layer-weight GiB | logits rel err "
        "| top-1 agree | rel err vs dequant | timing |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        if r.get("tokens_per_s") is None:
            lines.append(f"| {r['variant']} | {r['batch']} | {cell(r.get('status', '-'))} | | | | "
                         f"{gib(r.get('layer_weight_bytes'))} | | | | |")
            continue
        sp = r.get("speedup_vs_bf16")
        err = r.get("logits_rel_err")
        top = r.get("top1_agree")
        pre = r.get("prefill_top1_agree")
        top_s = "-" if top is None else ("yes" if top else "no")
        if pre is not None:
            top_s += f" (prefill {100 * pre:.0f}%)"
        vfq = r.get("vs_fakequant_rel_err")
        lines.append(
            f"| {r['variant']} | {r['batch']} | {r['tokens_per_s']:.1f} | {r['ms_per_token']:.3f} | "
            f"{'-' if sp is None else f'{sp:.2f}x'} | {gib(r.get('peak_mem_bytes'))} | "
            f"{gib(r.get('layer_weight_bytes'))} | {'-' if err is None else f'{err:.4f}'} | {top_s} | "
            f"{'-' if vfq is None else f'{vfq:.4f}'} | {cell(r.get('timing', '-'))} |")
    lines += [
        "",
        "logits rel err / top-1: batch 1, eager, the first decode step's logits against the bf16 model's of the same "
        "seed (prefill: top-1 agreement over the prompt's positions). rel err vs dequant: the same logits against the "
        "bf16 model whose layer weights are the variant's dequantized 4-bit weights (the GEMM's own error, without "
        "the quantization's). peak: max_memory_allocated over the batch's prefill + decode (weights, KV cache, "
        "activations, graph pool).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
