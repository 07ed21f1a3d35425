#!/usr/bin/env python3
"""One-process comparison of nibble with its peers on bench_gemm's shapes (issue 12 item 3), on one timer.

On a GPU machine, from the repository root (builds examples/torch's extension first if needed):

    python3 benchmarks/peers.py                      # all shapes, M in 1 4 16 64 256 1024 4096, every peer
    python3 benchmarks/peers.py --quick              # two shapes, M in 1 16 256: a smoke run
    python3 benchmarks/plot.py                       # then: benchmarks/peers_speedup_*.png from the JSON

Writes benchmarks/results/<device>-<date>-<commit>-peers.json (and .md, the same tables as printed); --out
changes the JSON path. Shapes are K x N of a weight W [N, K] (bench_gemm.cu kShapes); A is [M, K]; C [M, N].

Peers (each skipped, with the reason in the JSON and the table, where it cannot run):
  F.linear_f16, F.linear_bf16   dense cuBLAS through torch: the baseline of every speedup
  nibble_s4g128, nibble_nf4b64  nibble::gemm through the PyTorch op (examples/torch), f16 and bf16
  tinygemm_u4g128               torch._weight_int4pack_mm (bf16; weight packed by torch._convert_weight_to_int4pack,
                                innerKTiles 8, asymmetric int4 with [K/g, N, 2] scales and zeros, as gpt-fast does)
  bnb_nf4b64dq                  bitsandbytes.matmul_4bit, NF4 blocksize 64 with double quant (compress_statistics)
  fbgemm_bf16i4g128             fbgemm_gpu_genai's torch.ops.fbgemm.bf16i4bf16_shuffled (quantize_int4_preshuffle,
                                bf16, group 128, zero points)

bitsandbytes and fbgemm_gpu_genai are not in the GPU machine's image (the device README says how to carry wheels:
pip download ... bitsandbytes==0.50.x / fbgemm-gpu-genai==1.6.0 into .whl/, install with --target, PYTHONPATH); without
them their rows say "skipped: ... not importable".

Method: for every (peer, shape) the weight is quantized once and cloned into R copies whose bytes exceed 256 MiB
(R >= 2; more than 4x the H200's 60 MiB L2), so no call finds its weight in L2. One CUDA graph holds R calls, call i
on copy i with the same A; the graph is replayed after a warm-up and timed with CUDA events; time per call =
event time / R, median over the replays (cv % recorded). Where graph capture fails the peer is timed eagerly (the
same R calls between two events) and the row says so. Each peer's output is checked once per shape (M = 16)
against A W^T in fp32 (relative Frobenius error, recorded; above 0.25 the peer is marked failed, not timed: a wrong
call is no benchmark). Memory: per call, torch.cuda.max_memory_allocated() minus memory_allocated() before it, in
one eager call (the output included; 'extra' is that minus the output's bytes: workspaces, dequantized copies), and
the bytes of one weight copy. nibble's time is the op's: where its plan splits K, the op's zeroing of the workspace's
counters (64 KiB, on the stream) is inside the graph too.

JSON: {"context": {versions, device, date, command, method}, "results": [{"peer", "dtype" ("f16" / "bf16"), "K", "N",
"M", "us" (null when not timed), "status", "cv_pct", "reps", "copies", "timing", "weight_bytes", "peak_mem_bytes",
"extra_mem_bytes", "check_rel_err"}]} (what benchmarks/plot.py reads).
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672), (28672, 8192)]  # K x N
MS = [1, 4, 16, 64, 256, 1024, 4096]
ROTATE_BYTES = 256 << 20
CHECK_M = 16
CHECK_LIMIT = 0.25


def tensors_bytes(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(tensors_bytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(tensors_bytes(o) for o in obj.values())
    if type(obj).__module__.startswith("bitsandbytes"):  # its QuantState (absmax, nested state, code)
        return sum(tensors_bytes(v) for v in vars(obj).values())
    return 0


def clone_state(obj):
    import copy

    import torch

    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, torch.Size):
        return obj
    if isinstance(obj, tuple):
        return tuple(clone_state(o) for o in obj)
    if isinstance(obj, list):
        return [clone_state(o) for o in obj]
    if type(obj).__module__.startswith("bitsandbytes"):
        c = copy.copy(obj)
        for k, v in vars(obj).items():
            setattr(c, k, clone_state(v))
        return c
    return obj


# ---- peers: prepare(w [N, K] fp32 on the GPU) -> state; run(x, state) -> y ------------------------------------------


class Skip(Exception):
    pass


def peer_flinear(dtype):
    import torch.nn.functional as F

    def prepare(w):
        return w.to(dtype).contiguous()

    def run(x, w):
        return F.linear(x, w)

    return prepare, run


def peer_nibble(fmt, group, dtype):
    def prepare(w):
        ops = nibble_ops()
        plain = ops.quantize(w.to(dtype), fmt, group, dtype)
        return ops.repack(*plain, fmt, group, dtype) + (w.shape[0], w.shape[1])

    def run(x, st):
        codes, scales, zeros, offsets, n, k = st
        return nibble_ops().gemm(x, codes, scales, zeros, offsets, None, fmt, group, n, k, None)

    return prepare, run


def peer_tinygemm(group=128, inner_k_tiles=8):
    import torch

    def prepare(w):
        n, k = w.shape
        if k % (inner_k_tiles * 16) or n % 8:
            raise Skip(f"tinygemm needs K % {inner_k_tiles * 16} == 0 and N % 8 == 0")
        wg = w.float().reshape(n, k // group, group)
        lo, hi = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
        scale = ((hi - lo).clamp(min=1e-6) / 15).to(torch.bfloat16).float()
        zero = (lo + scale * 8).to(torch.bfloat16).float()  # tinygemm dequantizes (q - 8) * scale + zero
        q = torch.clamp(torch.round((wg - zero + 8 * scale) / scale), 0, 15)
        w_dq = ((q - 8) * scale + zero).reshape(n, k)
        q = q.to(torch.int32).reshape(n, k)
        sz = torch.stack([scale.squeeze(-1), zero.squeeze(-1)], dim=-1)  # [N, K/g, 2]
        sz = sz.transpose(0, 1).contiguous().to(torch.bfloat16)  # [K/g, N, 2]
        # The op takes uint8 [N, K/2]; which nibble holds the even k is checked here against the dequantized weight
        # (the one the op must reproduce), trying the high nibble (gpt-fast / torch's tests) first.
        x = torch.randn(16, k, device=w.device).to(torch.bfloat16)
        ref = x.float() @ w_dq.t()
        errs = []
        for even_high in (True, False):
            hi4, lo4 = (q[:, ::2], q[:, 1::2]) if even_high else (q[:, 1::2], q[:, ::2])
            wpack = torch._convert_weight_to_int4pack(((hi4 << 4) | lo4).to(torch.uint8), inner_k_tiles)
            err = rel_err(torch._weight_int4pack_mm(x, wpack, group, sz), ref)
            errs.append(err)
            if err < 2e-2:
                return wpack, sz
        raise Skip(f"failed: tinygemm output vs its own dequantized weight, error {errs} for either nibble order")

    def run(x, st):
        return torch._weight_int4pack_mm(x, st[0], group, st[1])

    return prepare, run


def peer_bnb(dtype):
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbF
    except Exception as e:  # noqa: BLE001
        raise Skip(f"bitsandbytes not importable ({type(e).__name__}: {e})") from None

    def prepare(w):
        packed, qs = bnbF.quantize_4bit(w.to(dtype).contiguous(), blocksize=64, compress_statistics=True,
                                        quant_type="nf4")
        return packed, qs

    def run(x, st):
        return bnb.matmul_4bit(x, st[0].t(), quant_state=st[1])

    return prepare, run


def peer_fbgemm(group=128):
    import torch

    try:
        from fbgemm_gpu.experimental.gen_ai.quantize import quantize_int4_preshuffle
    except Exception as e:  # noqa: BLE001
        raise Skip(f"fbgemm_gpu_genai not importable ({type(e).__name__}: {e})") from None

    def prepare(w):
        wq, (scale, zero) = quantize_int4_preshuffle(w.to(torch.bfloat16).contiguous(), group_size=group,
                                                     dtype="bf16", use_zp=True)
        return wq, scale, zero

    def run(x, st):
        return torch.ops.fbgemm.bf16i4bf16_shuffled(x, st[0], st[1], st[2])

    return prepare, run


def peers(selected):
    import torch

    table = [
        ("F.linear_f16", "f16", lambda: peer_flinear(torch.float16)),
        ("F.linear_bf16", "bf16", lambda: peer_flinear(torch.bfloat16)),
        ("nibble_s4g128", "f16", lambda: peer_nibble("s4", 128, torch.float16)),
        ("nibble_s4g128", "bf16", lambda: peer_nibble("s4", 128, torch.bfloat16)),
        ("nibble_nf4b64", "f16", lambda: peer_nibble("nf4", 64, torch.float16)),
        ("nibble_nf4b64", "bf16", lambda: peer_nibble("nf4", 64, torch.bfloat16)),
        ("tinygemm_u4g128", "bf16", lambda: peer_tinygemm(128)),
        ("bnb_nf4b64dq", "f16", lambda: peer_bnb(torch.float16)),
        ("bnb_nf4b64dq", "bf16", lambda: peer_bnb(torch.bfloat16)),
        ("fbgemm_bf16i4g128", "bf16", lambda: peer_fbgemm(128)),
    ]
    return [p for p in table if not selected or p[0] in selected or p[0].split("_")[0] in selected]


_OPS = None


def nibble_ops():
    global _OPS
    if _OPS is None:
        sys.path.insert(0, os.path.join(REPO, "examples", "torch"))
        from nibble_torch import ops

        _OPS = ops
    return _OPS


# ---- timing ---------------------------------------------------------------------------------------------------------


def time_per_call(calls, x, min_total_s=0.2, max_reps=30):
    """Median microseconds per call of `calls` (R callables, each on its own weight copy), one CUDA graph of all R."""
    import torch

    r = len(calls)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in calls:
            f(x)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    mode = "graph"
    graph = None
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = [f(x) for f in calls]  # noqa: F841 (kept alive: the graph's outputs)
        launch = graph.replay
    except Exception as e:  # noqa: BLE001
        torch.cuda.synchronize()
        graph = None
        mode = f"eager (graph capture failed: {type(e).__name__}: {str(e)[:120]})"

        def launch():
            for f in calls:
                f(x)

    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    launch()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    launch()
    torch.cuda.synchronize()
    one = max(time.perf_counter() - t0, 1e-6)
    reps = max(5, min(max_reps, int(min_total_s / one)))
    per_call = []
    for _ in range(reps):
        start.record()
        launch()
        stop.record()
        stop.synchronize()
        per_call.append(start.elapsed_time(stop) * 1000.0 / r)
    med = statistics.median(per_call)
    cv = 100.0 * statistics.pstdev(per_call) / statistics.mean(per_call)
    del graph
    return med, cv, reps, mode


def memory_of_call(f, x):
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    y = f(x)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    out = y.numel() * y.element_size()
    del y
    return peak, peak - out


def rel_err(y, ref):
    import torch

    d = (y.float() - ref).double()
    return (torch.linalg.norm(d) / torch.linalg.norm(ref.double())).item()


# ---- main -----------------------------------------------------------------------------------------------------------


def versions():
    import torch

    v = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        v["device"] = p.name
        v["sm_count"] = p.multi_processor_count
        v["l2_bytes"] = getattr(p, "L2_cache_size", None)
        v["memory_bytes"] = p.total_memory
    for mod, key in (("bitsandbytes", "bitsandbytes"), ("fbgemm_gpu", "fbgemm_gpu"), ("triton", "triton")):
        try:
            v[key] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            v[key] = f"not importable ({type(e).__name__})"
    try:
        v["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        v["driver"] = "?"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "include", "examples/torch", "benchmarks"],
                               cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
        v["nibble_commit"] = commit + ("+dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        v["nibble_commit"] = "?"
    # A copy of a working tree whose .git is not its own (the GPU machine's checkout): the caller says the commit.
    if os.environ.get("NIBBLE_COMMIT"):
        v["nibble_commit"] = os.environ["NIBBLE_COMMIT"]
    return v


def fmt_us(r, base):
    if r.get("us") is None:
        return r.get("status", "-")
    s = f"{r['us']:.1f}"
    if base and base.get("us"):
        s += f" ({base['us'] / r['us']:.2f}x)"
    return s


def markdown(doc):
    ctx = doc["context"]
    rows = doc["results"]
    ms = sorted({r["M"] for r in rows})
    lines = [
        f"One process, {ctx.get('device', '?')}, torch {ctx.get('torch')} (CUDA {ctx.get('cuda')}, driver "
        f"{ctx.get('driver')}), bitsandbytes {ctx.get('bitsandbytes')}, fbgemm_gpu {ctx.get('fbgemm_gpu')}, nibble "
        f"{ctx.get('nibble_commit')}, {ctx.get('date')}. µs per call (speedup over F.linear of the same dtype, same "
        "run); CUDA graphs of R calls over R weight copies (> 256 MiB), median of the replays.",
        "",
    ]
    for dtype in ("f16", "bf16"):
        names = []
        for r in rows:
            if r["dtype"] == dtype and r["peer"] not in names and r.get("us") is not None:
                names.append(r["peer"])
        if not names:
            continue
        lines.append(f"| {dtype} K × N | peer | " + " | ".join(f"M={m}" for m in ms) + " |")
        lines.append("|---|---|" + "---|" * len(ms))
        for k, n in SHAPES:
            for p in names:
                cells = []
                for m in ms:
                    r = next((x for x in rows if x["peer"] == p and x["dtype"] == dtype and x["K"] == k
                              and x["N"] == n and x["M"] == m), None)
                    base = next((x for x in rows if x["peer"] == f"F.linear_{dtype}" and x["K"] == k and x["N"] == n
                                 and x["M"] == m), None)
                    cells.append(fmt_us(r, None if p.startswith("F.linear") else base) if r else "")
                if any(cells):
                    lines.append(f"| {k} × {n} | {p} | " + " | ".join(cells) + " |")
        lines.append("")
    not_run = {}
    for r in rows:
        if r.get("us") is None:
            not_run.setdefault((r["peer"], r["dtype"]), set()).add(r.get("status", "?"))
    for (p, dtype), why in not_run.items():
        lines.append(f"- {p} {dtype}: not timed everywhere: " + "; ".join(sorted(why)))
    if not_run:
        lines.append("")
    lines.append("Memory per call (MiB): weight = one copy's bytes; extra = peak allocation during one eager call "
                 "beyond its output (workspaces, dequantized weights), at the smallest and largest M measured.")
    lines.append("")
    lines.append("| peer | dtype | K × N | weight | extra, M=" + str(ms[0]) + " | extra, M=" + str(ms[-1]) +
                 " | check: rel. error vs A·Wᵀ |")
    lines.append("|---|---|---|---|---|---|---|")
    mib = lambda b: "-" if b is None else f"{b / 2**20:.1f}"  # noqa: E731
    seen = set()
    for r in rows:
        key = (r["peer"], r["dtype"], r["K"], r["N"])
        if key in seen or r.get("weight_bytes") is None:
            continue
        seen.add(key)
        at = {x["M"]: x for x in rows if (x["peer"], x["dtype"], x["K"], x["N"]) == key}
        lo, hi = at.get(ms[0], {}), at.get(ms[-1], {})
        err = r.get("check_rel_err")
        lines.append(f"| {r['peer']} | {r['dtype']} | {r['K']} × {r['N']} | {mib(r.get('weight_bytes'))} | "
                     f"{mib(lo.get('extra_mem_bytes'))} | {mib(hi.get('extra_mem_bytes'))} | "
                     f"{'-' if err is None else f'{err:.3f}'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description="nibble vs its peers in one process (see the module docstring)")
    ap.add_argument("--shapes", nargs="*", help="K x N as KxN, e.g. 4096x4096 (default: bench_gemm's five)")
    ap.add_argument("--ms", nargs="*", type=int, help=f"token counts (default: {MS})")
    ap.add_argument("--peers", nargs="*", help="peer names or prefixes (nibble, tinygemm, bnb, fbgemm, F.linear)")
    ap.add_argument("--quick", action="store_true", help="4096x4096 and 8192x28672, M 1 16 256")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/<device>-<date>-<commit>-peers.json)")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        sys.exit("peers.py: no CUDA device (this benchmark runs on a GPU)")
    shapes = SHAPES
    ms = args.ms or MS
    if args.quick:
        shapes, ms = [(4096, 4096), (8192, 28672)], args.ms or [1, 16, 256]
    if args.shapes:
        shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes]
    ctx = versions()
    ctx["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    ctx["command"] = " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    ctx["method"] = (f"CUDA graph of R calls over R weight copies (> {ROTATE_BYTES >> 20} MiB in all, R >= 2), "
                     "CUDA events, median per call; memory: max_memory_allocated delta of one eager call")
    print(json.dumps(ctx, indent=1))
    torch.manual_seed(20261203)
    results = []
    t_start = time.time()
    out = args.out
    if out is None:
        dev = ctx.get("device", "gpu").split()[-1].lower().replace("-", "")
        out = os.path.join(HERE, "results", f"{dev}-{ctx['date'][:10]}-{ctx['nibble_commit']}-peers.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    def write(final):
        ctx["wall_s"] = round(time.time() - t_start, 1)
        ctx["complete"] = final  # False: written after a shape, so a run cut off keeps what it measured
        with open(out, "w") as f:
            json.dump({"context": ctx, "results": results}, f, indent=1)

    for k, n in shapes:
        w = torch.randn(n, k, device="cuda") * 0.02  # fp32 master weight, quantized / cast by each peer
        x32 = {m: torch.randn(m, k, device="cuda") for m in sorted(set(ms) | {CHECK_M})}
        for name, dtype, make in peers(args.peers):
            tdt = torch.float16 if dtype == "f16" else torch.bfloat16
            row0 = dict(peer=name, dtype=dtype, K=k, N=n)
            copies = []
            try:
                prepare, run = make()
                st = prepare(w)
                torch.cuda.synchronize()
                wbytes = tensors_bytes(st)
                xr = x32[CHECK_M].to(tdt)
                err = rel_err(run(xr, st), xr.float() @ w.t())
                if not math.isfinite(err) or err > CHECK_LIMIT:
                    raise Skip(f"failed: output check error {err:.3g} > {CHECK_LIMIT}")
                r = max(2, math.ceil(ROTATE_BYTES / max(wbytes, 1)))
                copies = [st] + [clone_state(st) for _ in range(r - 1)]
            except Skip as e:
                print(f"{name} {dtype} K{k} N{n}: skipped: {e}")
                results += [dict(row0, M=m, us=None, status=f"skipped: {e}") for m in ms]
                continue
            except Exception as e:  # noqa: BLE001
                msg = f"error: {type(e).__name__}: {str(e)[:200]}"
                print(f"{name} {dtype} K{k} N{n}: {msg}")
                results += [dict(row0, M=m, us=None, status=msg) for m in ms]
                continue
            for m in ms:
                x = x32[m].to(tdt)
                calls = [(lambda s: (lambda a: run(a, s)))(s) for s in copies]
                try:
                    peak, extra = memory_of_call(calls[0], x)
                    us, cv, reps, mode = time_per_call(calls, x)
                    row = dict(row0, M=m, us=us, cv_pct=cv, reps=reps, copies=len(copies), timing=mode,
                               weight_bytes=wbytes, peak_mem_bytes=peak, extra_mem_bytes=extra,
                               check_rel_err=err, status="ok")
                    print(f"{name:18s} {dtype:4s} K{k:6d} N{n:6d} M{m:5d}: {us:9.2f} us (cv {cv:.1f}%, {mode}), "
                          f"extra {extra / 2**20:.1f} MiB")
                except Exception as e:  # noqa: BLE001
                    row = dict(row0, M=m, us=None, status=f"error: {type(e).__name__}: {str(e)[:200]}")
                    print(f"{name} {dtype} K{k} N{n} M{m}: {row['status']}")
                results.append(row)
            del copies
            torch.cuda.empty_cache()
        del w, x32
        torch.cuda.empty_cache()
        write(False)
    write(True)
    doc = {"context": ctx, "results": results}
    md = markdown(doc)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {out} and {os.path.splitext(out)[0]}.md ({ctx['wall_s']} s)")


if __name__ == "__main__":
    main()
