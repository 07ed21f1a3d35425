#!/usr/bin/env python3
"""Plots of nibble's committed GEMM benchmarks (and of benchmarks/peers.py and e2e_decode.py, where their JSON exists).

Regenerate every PNG from the committed JSON, from the repository root:

    python3 benchmarks/plot.py

Needs matplotlib (pip install matplotlib). Writes into benchmarks/:

  gemm_speedup_f16.png, gemm_speedup_bf16.png
      speedup over cuBLASLt (fp16 / bf16 dense, the same bench_gemm run) against M (log2 axis), one panel per
      K x N shape, one line per nibble format. Speedup = cuBLASLt `us` / nibble `us` of the same run, as in
      RESULTS.md and bench_gemm.cu (`speedup_vs_cublas`); the script recomputes it from the two `us` counters and
      checks it against that counter.
  gemm_chain.png
      the Llama-3 layer chains of the same run (qkv + o + gate_up + down in one graph), speedup over cuBLASLt.
  peers_speedup_<dtype>.png   (only when peers JSON exists: benchmarks/results/*peers*.json, or --peers)
      one-process timing of benchmarks/peers.py: each peer's speedup over F.linear of the same dtype in the same
      process, against M. Not mixed with bench_gemm's numbers (another process, another timer).
  e2e_decode.png   (only when e2e JSON exists: benchmarks/results/*e2e*.json, or --e2e)
      benchmarks/e2e_decode.py: decode tokens/s of each variant (bf16, nibble, bnb_nf4), one panel per batch size,
      each bar labelled with its tokens/s and its speedup over bf16 at that batch (same process); and the peak
      memory per variant and batch, with the decoder layers' weight bytes hatched inside it.

Input: by default, for each M, the newest H200 bench_gemm JSON in benchmarks/results/ (by the date in its context)
that has cuBLAS and nibble entries for all five bench_gemm shapes at that M (the committed runs cover M 1-64 and
256-4096 in different sessions); every point is a ratio within one run, and the title names the run of each M.
--json takes the file(s) instead. The chain bars come from the newest of those runs that has chains. Names read
(bench_gemm.cu):
  cublas/<act>/K<K>_N<N>/M<M>/...            nibble/<act>/<format>/K<K>_N<N>/M<M>/...
  chain/<model>/<lib>/<act>/M<M>/...         counter `us` = median microseconds per launch
"""
import argparse
import glob
import json
import math
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672), (28672, 8192)]  # K x N, bench_gemm.cu kShapes

GEMM_RE = re.compile(r"^(cublas|nibble)/(f16|bf16)/(?:([a-z0-9_]+)/)?K(\d+)_N(\d+)/M(\d+)(?:/|$)")
CHAIN_RE = re.compile(r"^chain/([^/]+)/([^/]+)/(f16|bf16)/M(\d+)(?:/|$)")


def parse_bench(path):
    """Returns (context, gemm, chain): gemm[(lib, act, fmt, K, N, M)] = us; chain[(model, lib, act, M)] = us.
    Also returns the bench's own speedup counters for the check."""
    with open(path) as f:
        d = json.load(f)
    gemm, chain, counter = {}, {}, {}
    for b in d.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration" or "us" not in b:
            continue
        m = GEMM_RE.match(b["name"])
        if m:
            lib, act, fmt, k, n, mm = m.groups()
            if lib == "cublas" and fmt is not None:
                continue
            key = (lib, act, fmt or "", int(k), int(n), int(mm))
            gemm[key] = float(b["us"])
            if "speedup_vs_cublas" in b:
                counter[key] = float(b["speedup_vs_cublas"])
            continue
        m = CHAIN_RE.match(b["name"])
        if m:
            model, lib, act, mm = m.groups()
            chain[(model, lib, act, int(mm))] = float(b["us"])
            if "speedup_vs_cublas" in b:
                counter[("chain", model, lib, act, int(mm))] = float(b["speedup_vs_cublas"])
    return d.get("context", {}), gemm, chain, counter


def full_ms(gemm):
    """The M values at which a run has cuBLAS and nibble (f16) entries for every bench_gemm shape."""
    ms = None
    for k, n in SHAPES:
        have = {key[5] for key in gemm if key[0] == "cublas" and key[1] == "f16" and key[3] == k and key[4] == n}
        have &= {key[5] for key in gemm if key[0] == "nibble" and key[1] == "f16" and key[3] == k and key[4] == n}
        ms = have if ms is None else ms & have
    return ms or set()


def pick_default():
    """For every M, the newest H200 bench_gemm run (by its context date) that covers it on all five shapes.
    Returns [(path, [M...])], newest first."""
    runs = []
    for path in glob.glob(os.path.join(RESULTS, "h200-*.json")):
        if "peers" in os.path.basename(path) or "e2e" in os.path.basename(path):
            continue
        try:
            ctx, gemm, _, _ = parse_bench(path)
        except (OSError, ValueError):
            continue
        if "H200" in ctx.get("device", "") and full_ms(gemm):
            runs.append((ctx.get("date", ""), path, full_ms(gemm)))
    runs.sort(reverse=True)
    taken, out = set(), []
    for _, path, ms in runs:
        mine = sorted(ms - taken)
        if mine:
            out.append((path, mine))
            taken |= ms
    return out


def merge_runs(chosen):
    """One (ctx, gemm, chain, counter) from [(path, Ms)]: each M's entries from its own run only, so every speedup
    is still a ratio of one run; the chain entries from the newest run that has any."""
    gemm, counter, chain, ctxs = {}, {}, {}, []
    for path, ms in chosen:
        ctx, g, c, cnt = parse_bench(path)
        ctxs.append(ctx)
        keep = set(ms)
        gemm.update({key: v for key, v in g.items() if key[5] in keep})
        counter.update({key: v for key, v in cnt.items() if key[0] != "chain" and key[5] in keep})
        if c and not chain:
            chain = c
            counter.update({key: v for key, v in cnt.items() if key[0] == "chain"})
            chain_src = path
    src = "\n".join(f"M {', '.join(map(str, ms))}: {os.path.basename(p)}" for p, ms in chosen)
    return ctxs[0], gemm, chain, counter, src, (chain_src if chain else None)


def speedups(gemm, counter, act):
    """{(fmt, K, N): [(M, speedup)]} for nibble over cuBLAS of `act`, same run."""
    out = {}
    for (lib, a, fmt, k, n, m), us in gemm.items():
        if lib != "nibble" or a != act:
            continue
        base = gemm.get(("cublas", act, "", k, n, m))
        if base is None:
            continue
        s = base / us
        c = counter.get((lib, a, fmt, k, n, m))
        if c is not None and not math.isclose(s, c, rel_tol=2e-2):
            # bench_gemm's counter is the ratio of medians of the two runs; `us` is the median too.
            raise SystemExit(f"speedup of nibble/{act}/{fmt}/K{k}_N{n}/M{m}: {s:.3f} from `us`, {c:.3f} in the JSON")
        out.setdefault((fmt, k, n), []).append((m, s))
    for v in out.values():
        v.sort()
    return out


def shape_title(k, n):
    return f"K {k} x N {n}"


def fmt_label(fmt):
    m = re.match(r"^([a-z_0-9]+?)([gb])(\d+)(dq)?$", fmt)
    if not m:
        return fmt
    name, kind, g, dq = m.groups()
    return f"{name} {'g' if kind == 'g' else 'b'}{g}{' dq (compact)' if dq else ''}"


def legend_all(fig_axes):
    """Handles of every label drawn in any panel, once each (a format may be missing from the first panel)."""
    seen = {}
    for ax in fig_axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    return list(seen.values()), list(seen.keys())


def log2_axis(ax, ms):
    ax.set_xscale("log", base=2)
    ax.set_xticks(ms)
    ax.set_xticklabels([str(m) for m in ms], fontsize=7)
    ax.axhline(1.0, color="0.4", lw=0.8, ls="--")
    ax.grid(True, which="major", alpha=0.3)


def speedup_grid(plt, shapes, curves, ylabel, legend_title):
    """A grid of speedup-vs-M panels, three per row, one per (K, N) shape; curves(k, n) yields (label, color, points)
    with points [(M, speedup)]. The legend goes in the first unused panel (else the first panel). Returns the figure
    and its number of rows."""
    cols = 3
    rows = (len(shapes) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows), squeeze=False)
    for i, (k, n) in enumerate(shapes):
        ax = axes[i // cols][i % cols]
        ms = set()
        for label, color, pts in curves(k, n):
            ms.update(m for m, _ in pts)
            ax.plot([m for m, _ in pts], [s for _, s in pts], marker="o", ms=3, lw=1.2, color=color, label=label)
        log2_axis(ax, sorted(ms))
        ax.set_title(shape_title(k, n), fontsize=9)
        ax.set_xlabel("M (tokens)", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
    handles, labels = legend_all([a for row in axes for a in row])
    for j in range(len(shapes), rows * cols):
        axes[j // cols][j % cols].axis("off")
    if len(shapes) < rows * cols:
        axes[-1][-1].legend(handles, labels, loc="center", fontsize=8, title=legend_title)
    else:
        axes[0][0].legend(handles, labels, fontsize=7)
    return fig, rows


def plot_gemm(plt, gemm, counter, ctx, src, act, out_path, dpi):
    sp = speedups(gemm, counter, act)
    if not sp:
        return None
    fmts = sorted({f for f, _, _ in sp}, key=lambda f: (-sum(len(sp.get((f, k, n), [])) for k, n in SHAPES), f))
    shapes = [s for s in SHAPES if any((f, s[0], s[1]) in sp for f in fmts)]
    colors = {f: f"C{i % 10}" for i, f in enumerate(fmts)}

    def curves(k, n):
        for f in fmts:
            if sp.get((f, k, n)):
                yield fmt_label(f), colors[f], sp[(f, k, n)]

    fig, rows = speedup_grid(plt, shapes, curves, f"speedup over cuBLASLt {act}", "nibble format")
    fig.suptitle(
        f"nibble 4-bit GEMM, {act} activations: speedup over cuBLASLt {act} dense, same run\n"
        f"{ctx.get('device', '?')}, CUDA graphs, weights rotated past L2; each M from one run:\n{src}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.045 * (2 + src.count("\n")) / rows))
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return out_path


def plot_chain(plt, chain, ctx, src, out_path, dpi):
    models = sorted({k[0] for k in chain})
    if not models:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(5.0 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        bars = []  # (label, M, speedup)
        for (mo, lib, act, m), us in sorted(chain.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][3])):
            if mo != model or lib == "cublas":
                continue
            base = chain.get((model, "cublas", act, m))
            if base is not None:
                bars.append((f"{lib.replace('nibble_', '')} {act}", m, base / us))
        labels = sorted({b[0] for b in bars})
        ms = sorted({b[1] for b in bars})
        width = 0.8 / max(1, len(labels))
        for li, lab in enumerate(labels):
            xs = [mi + li * width for mi, m in enumerate(ms) for b in bars if b[0] == lab and b[1] == m]
            ys = [b[2] for m in ms for b in bars if b[0] == lab and b[1] == m]
            ax.bar(xs, ys, width=width, label=lab)
            for x, y in zip(xs, ys):
                ax.text(x, y, f"{y:.2f}", ha="center", va="bottom", fontsize=6)
        ax.set_xticks([mi + 0.4 - width / 2 for mi in range(len(ms))])
        ax.set_xticklabels([f"M={m}" for m in ms], fontsize=8)
        ax.axhline(1.0, color="0.4", lw=0.8, ls="--")
        ax.set_title(f"{model} layer (qkv + o + gate_up + down)", fontsize=9)
        ax.set_ylabel("speedup over cuBLASLt, same run", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(f"Layer chains, {ctx.get('device', '?')}, {os.path.basename(src)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return out_path


def plot_peers(plt, path, out_dir, dpi):
    """benchmarks/peers.py JSON: speedup of every peer over F.linear of the same dtype, same process."""
    with open(path) as f:
        d = json.load(f)
    rows = [r for r in d.get("results", []) if r.get("us")]
    written = []
    for act in ("f16", "bf16"):
        base = {(r["K"], r["N"], r["M"]): r["us"] for r in rows if r["peer"] == f"F.linear_{act}"}
        peers = sorted({r["peer"] for r in rows if r["dtype"] == act and not r["peer"].startswith("F.linear")})
        if not base or not peers:
            continue
        shapes = [s for s in SHAPES if any((s[0], s[1]) == (k, n) for k, n, _ in base)]
        colors = {p: f"C{i % 10}" for i, p in enumerate(peers)}

        def curves(k, n):
            for p in peers:
                pts = sorted(
                    (r["M"], base[(k, n, r["M"])] / r["us"])
                    for r in rows
                    if r["peer"] == p and r["dtype"] == act and r["K"] == k and r["N"] == n and (k, n, r["M"]) in base
                )
                if pts:
                    yield p, colors[p], pts

        fig, _ = speedup_grid(plt, shapes, curves, f"speedup over F.linear {act}", "peer")
        ctx = d.get("context", {})
        fig.suptitle(
            f"One process (benchmarks/peers.py), {act}: speedup over F.linear {act}\n"
            f"{ctx.get('device', '?')}, torch {ctx.get('torch', '?')}, {os.path.basename(path)}",
            fontsize=9,
        )
        fig.tight_layout()
        out = os.path.join(out_dir, f"peers_speedup_{act}.png")
        fig.savefig(out, dpi=dpi)
        plt.close(fig)
        written.append(out)
    return written


def plot_e2e(plt, path, out_path, dpi):
    """benchmarks/e2e_decode.py JSON: tokens/s bars per batch size (speedup over bf16 on each bar), peak memory."""
    with open(path) as f:
        d = json.load(f)
    rows = d.get("results", [])
    timed = [r for r in rows if r.get("tokens_per_s")]
    if not timed:
        return None
    variants = []
    for r in rows:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    batches = sorted({r["batch"] for r in timed})
    colors = {v: f"C{i % 10}" for i, v in enumerate(variants)}
    at = {(r["variant"], r["batch"]): r for r in timed}
    mem = [r for r in timed if r.get("peak_mem_bytes")]
    panels = len(batches) + (1 if mem else 0)
    fig, axes = plt.subplots(1, panels, figsize=(max(3.4 * panels, 9.0), 3.6), squeeze=False)
    for ax, b in zip(axes[0], batches):
        vs = [v for v in variants if (v, b) in at]
        top = max(at[(v, b)]["tokens_per_s"] for v in vs)
        for i, v in enumerate(vs):
            r = at[(v, b)]
            eager = r.get("timing", "graph") != "graph"
            ax.bar(i, r["tokens_per_s"], width=0.7, color=colors[v], hatch="xx" if eager else None)
            sp = r.get("speedup_vs_bf16")
            label = f"{r['tokens_per_s']:.0f}" + (f"\n{sp:.2f}x" if sp is not None else "")
            label += "\neager" if eager else ""
            ax.text(i, r["tokens_per_s"], label, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(vs)))
        ax.set_xticklabels(vs, fontsize=8)
        ax.set_ylim(0, top * 1.3)
        ax.set_title(f"batch {b}: tokens/s (speedup over bf16)", fontsize=9)
        ax.set_ylabel("decode tokens/s", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    if mem:
        ax = axes[0][-1]
        mvars = [v for v in variants if any(r["variant"] == v for r in mem)]
        width = 0.8 / len(mvars)
        for vi, v in enumerate(mvars):
            pts = [(bi + vi * width, at[(v, b)]) for bi, b in enumerate(batches)
                   if (v, b) in at and at[(v, b)].get("peak_mem_bytes")]
            xs = [x for x, _ in pts]
            ax.bar(xs, [r["peak_mem_bytes"] / 2**30 for _, r in pts], width=width, color=colors[v], label=v)
            ax.bar(xs, [(r.get("layer_weight_bytes") or 0) / 2**30 for _, r in pts], width=width, fill=False,
                   hatch="//", edgecolor="0.25", lw=0, label="layer weights" if vi == 0 else None)
            for x, r in pts:
                ax.text(x, r["peak_mem_bytes"] / 2**30, f"{r['peak_mem_bytes'] / 2**30:.1f}", ha="center",
                        va="bottom", fontsize=6)
        ax.set_ylim(0, max(r["peak_mem_bytes"] for r in mem) / 2**30 * 1.45)
        ax.set_xticks([bi + 0.4 - width / 2 for bi in range(len(batches))])
        ax.set_xticklabels([f"batch {b}" for b in batches], fontsize=8)
        ax.set_title("peak memory (GiB), layer weights hatched", fontsize=9)
        ax.set_ylabel("GiB (max_memory_allocated)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, ncol=2, loc="upper center")
    ctx = d.get("context", {})
    c = ctx.get("config", {})
    missing = sorted({f"{r['variant']}: {r.get('status', '?')[:110]}" for r in rows if not r.get("tokens_per_s")})
    fig.suptitle(
        f"End-to-end greedy decode (benchmarks/e2e_decode.py): {c.get('model', '?')}, {c.get('layers', '?')} layers, "
        "random weights, lm_head / embedding bf16 in every variant\n"
        f"prompt {c.get('prompt', '?')}, {c.get('steps', '?')} decode steps, static KV cache, CUDA graph "
        "(cross-hatched: eager)\n"
        f"{ctx.get('device', '?')}, torch {ctx.get('torch', '?')}, bitsandbytes {ctx.get('bitsandbytes', '?')}, "
        f"nibble {ctx.get('nibble_commit', '?')}; {os.path.basename(path)}"
        + (" (incomplete run)" if ctx.get("complete") is False else ""),
        fontsize=8,
    )
    if missing:
        fig.text(0.01, 0.01, "not timed: " + "; ".join(missing), fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.04 if missing else 0, 1, 1))
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return out_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", nargs="+", help="bench_gemm JSON file(s) (default: for each M, the newest H200 run in "
                    "benchmarks/results/ that covers all five shapes at that M)")
    ap.add_argument("--peers", help="peers.py JSON (default: the newest benchmarks/results/*peers*.json, if any)")
    ap.add_argument("--e2e", help="e2e_decode.py JSON (default: the newest benchmarks/results/*e2e*.json, if any)")
    ap.add_argument("--out", default=HERE, help="folder for the PNGs (default: benchmarks/)")
    ap.add_argument("--dpi", type=int, default=100)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [(p, sorted(full_ms(parse_bench(p)[1]))) for p in args.json] if args.json else pick_default()
    if not chosen:
        sys.exit("no H200 bench_gemm JSON with cuBLAS and nibble entries for all five shapes in benchmarks/results/")
    ctx, gemm, chain, counter, src, chain_src = merge_runs(chosen)
    for p, ms in chosen:
        print(f"bench_gemm: {os.path.relpath(p)}: M {ms}")
    written = []
    for act in ("f16", "bf16"):
        p = plot_gemm(plt, gemm, counter, ctx, src, act, os.path.join(args.out, f"gemm_speedup_{act}.png"), args.dpi)
        if p:
            written.append(p)
    if chain_src:
        print(f"chains: {os.path.relpath(chain_src)}")
        p = plot_chain(plt, chain, ctx, chain_src, os.path.join(args.out, "gemm_chain.png"), args.dpi)
        if p:
            written.append(p)

    peers = args.peers
    if peers is None:
        found = sorted(glob.glob(os.path.join(RESULTS, "*peers*.json")), key=os.path.getmtime)
        peers = found[-1] if found else None
    if peers:
        print(f"peers: {os.path.relpath(peers)}")
        written += plot_peers(plt, peers, args.out, args.dpi)
    else:
        print("peers: no benchmarks/results/*peers*.json (run benchmarks/peers.py on a GPU): no peer plot")

    e2e = args.e2e
    if e2e is None:
        found = sorted(glob.glob(os.path.join(RESULTS, "*e2e*.json")), key=os.path.getmtime)
        e2e = found[-1] if found else None
    if e2e:
        print(f"e2e: {os.path.relpath(e2e)}")
        p = plot_e2e(plt, e2e, os.path.join(args.out, "e2e_decode.png"), args.dpi)
        if p:
            written.append(p)
        else:
            print("e2e: no timed rows: no e2e plot")
    else:
        print("e2e: no benchmarks/results/*e2e*.json (run benchmarks/e2e_decode.py on a GPU): no e2e plot")
    for w in written:
        print(f"wrote {os.path.relpath(w)} ({os.path.getsize(w) // 1024} KiB)")


if __name__ == "__main__":
    main()
