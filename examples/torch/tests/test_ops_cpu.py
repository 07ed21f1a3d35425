"""nibble::quantize and nibble::repack through their CPU paths (nibble's quantize_cpu / repack_host), checked
against the quantization rules of README "Quantization rules" computed with torch here; and the fake (meta)
implementations against the real outputs. These run without a GPU."""
import pytest
import reference
import torch
from conftest import HAS_CUDA
from nibble_torch import ops

N, K = 48, 512


def weights(gen, n=N, k=K, dtype=torch.float32):
    return (torch.randn(n, k, generator=gen) * 0.05).to(dtype)


def groups_of(x, g):
    """[N, K] -> [N, K / g, g] (float32)."""
    return x.float().reshape(x.shape[0], -1, g)


@pytest.mark.parametrize("wdtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sdtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("g", [32, 128])
def test_s4_rule(gen, wdtype, sdtype, g):
    # scale = absmax / 7 in fp32 (IEEE), rounded to the scale type; code = clamp(rint(x / s), -8, 7) with that scale.
    w = weights(gen, dtype=wdtype)
    codes, scales, zeros, offsets = ops.quantize(w, "s4", g, sdtype)
    assert codes.shape == (N, K // 2) and codes.dtype == torch.uint8
    assert scales.shape == (N, K // g) and scales.dtype == sdtype
    assert zeros.numel() == 0 and offsets.numel() == 0
    xg = groups_of(w, g)
    s = (xg.abs().amax(-1) / 7).to(sdtype)
    assert torch.equal(scales, s)
    q = torch.clamp(torch.round(xg / s.float().unsqueeze(-1)), -8, 7).to(torch.int64).reshape(N, K)
    got = reference.code_values("s4", reference.unpack_codes(codes)).to(torch.int64)
    assert torch.equal(got, q)
    # and so the dequantized weight is within half a step of w
    err = (reference.dequantize("s4", codes, scales, zeros, offsets) - w.double()).abs()
    assert (err <= reference.expand(scales, K) / 2 * (1 + 1e-6)).all()


@pytest.mark.parametrize("g", [64, 128])
def test_u4_rule(gen, g):
    # s = (max(max, 0) - min(min, 0)) / 15, z = clamp(rint(-min / s), 0, 15), q = clamp(rint(x / s) + z, 0, 15)
    w = weights(gen) + 0.02  # not symmetric about 0
    codes, scales, zeros, _ = ops.quantize(w, "u4", g, torch.float16)
    xg = groups_of(w, g)
    hi = torch.clamp(xg.amax(-1), min=0)
    lo = torch.clamp(xg.amin(-1), max=0)
    s = ((hi - lo) / 15).to(torch.float16)
    assert torch.equal(scales, s)
    sf = s.float()
    z = torch.clamp(torch.round(-xg.amin(-1) / sf), 0, 15)
    assert torch.equal(zeros.to(torch.float32), z)
    q = torch.clamp(torch.round(xg / sf.unsqueeze(-1)) + z.unsqueeze(-1), 0, 15).reshape(N, K)
    assert torch.equal(reference.unpack_codes(codes).float(), q)


def test_affine_u4_rule(gen):
    # s = (max - min) / 15, m = min (both rounded to the scale type), q = clamp(rint((x - m) / s), 0, 15)
    g = 32
    w = weights(gen)
    codes, scales, zeros, offsets = ops.quantize(w, "affine_u4", g, torch.float32)
    assert zeros.numel() == 0 and offsets.shape == scales.shape
    xg = groups_of(w, g)
    s = (xg.amax(-1) - xg.amin(-1)) / 15
    m = xg.amin(-1)
    assert torch.equal(scales, s) and torch.equal(offsets, m)
    q = torch.clamp(torch.round((xg - m.unsqueeze(-1)) / s.unsqueeze(-1)), 0, 15).reshape(N, K)
    assert torch.equal(reference.unpack_codes(codes).float(), q)


@pytest.mark.parametrize("fmt", ["nf4", "fp4"])
def test_codebook_rule(gen, fmt):
    # scale = absmax; code = the nearest table entry to x / absmax (ties aside: checked as "no entry is nearer").
    g = 64
    w = weights(gen)
    codes, scales, _, _ = ops.quantize(w, fmt, g, torch.float32)
    xg = groups_of(w, g)
    assert torch.equal(scales, xg.abs().amax(-1))
    table = torch.tensor(reference.NF4 if fmt == "nf4" else reference.FP4, dtype=torch.float64)
    x = (xg / scales.unsqueeze(-1)).double().reshape(N, K)
    q = reference.unpack_codes(codes)
    chosen = (x - table[q]).abs()
    best = (x.unsqueeze(-1) - table).abs().amin(-1)
    assert (chosen <= best + 1e-6).all()


@pytest.mark.parametrize("fmt", ops.FORMATS)
@pytest.mark.parametrize("act", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("g", [64, 0])
def test_repack_scales_are_transposed_and_padded(gen, fmt, act, g):
    # GEMM layout: scale (group, n) at [group][n_pad], rounded to the activation type, padding 0.
    n, k = 40, 320  # n_pad 48, k_pad 320
    w = weights(gen, n, k)
    plain = ops.quantize(w, fmt, g, torch.float32)
    gc, gs, gz, go = ops.repack(*plain, fmt, g, act)
    n_pad, k_pad, groups = ops.gemm_shape(n, k, g)
    assert gc.shape == (n_pad * k_pad // 2,) and gc.dtype == torch.uint8
    assert gs.shape == (groups, n_pad) and gs.dtype == act
    plain_groups = plain[1].shape[1]
    assert torch.equal(gs[:plain_groups, :n], plain[1].t().to(act))
    assert (gs[:, n:] == 0).all() and (gs[plain_groups:] == 0).all()
    if fmt == "u4":
        assert torch.equal(gz[:plain_groups, :n], plain[2].t())
    if fmt == "affine_u4":
        assert torch.equal(go[:plain_groups, :n], plain[3].t().to(act))
    # every code byte of the weight is somewhere in the GEMM codes (same multiset of nibbles, zeros for padding)
    def hist(t):
        return torch.bincount(torch.cat([t.flatten().long() & 15, t.flatten().long() >> 4]), minlength=16)

    pad_nibbles = n_pad * k_pad - n * k
    expect = hist(plain[0])
    expect[0] += pad_nibbles
    assert torch.equal(hist(gc), expect)


def test_bad_arguments_raise_with_nibble_status(gen):
    w = weights(gen, 16, 96)
    with pytest.raises(RuntimeError, match=r"nibble::quantize: .*group"):
        ops.quantize(w, "s4", 64, torch.float16)  # K = 96 is not a multiple of 64
    with pytest.raises(RuntimeError, match=r"unknown format 'int3'"):
        ops.quantize(w, "int3", 32, torch.float16)
    with pytest.raises(RuntimeError, match=r"nibble::repack: "):
        plain = ops.quantize(w, "s4", 32, torch.float16)
        ops.repack(*plain, "s4", 64, torch.float16)  # group 64 does not divide K = 96


@pytest.mark.parametrize("fmt", ["s4", "u4", "affine_u4"])
def test_opcheck_cpu(gen, fmt):
    # schema, fake (meta) implementation against the real one, AOT dispatch: torch.library.opcheck
    w = weights(gen, 32, 256).to(torch.float16)
    torch.library.opcheck(torch.ops.nibble.quantize.default, (w, fmt, 64, torch.float16))
    plain = ops.quantize(w, fmt, 64, torch.float16)
    torch.library.opcheck(torch.ops.nibble.repack.default, (*plain, fmt, 64, torch.bfloat16))


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device: the GPU paths are not compared with the CPU paths")
@pytest.mark.parametrize("fmt", ops.FORMATS)
def test_gpu_quantize_and_repack_equal_cpu(gen, fmt):
    # nibble's promise: the GPU and CPU quantizers and repacks write the same bits.
    w = weights(gen, 200, 1024).to(torch.bfloat16)
    for g in (32, 128, 0):
        cpu = ops.quantize(w, fmt, g, torch.float16)
        gpu = ops.quantize(w.cuda(), fmt, g, torch.float16)
        for a, b in zip(cpu, gpu):
            assert torch.equal(a, b.cpu())
        rc = ops.repack(*cpu, fmt, g, torch.bfloat16)
        rg = ops.repack(*gpu, fmt, g, torch.bfloat16)
        for a, b in zip(rc, rg):
            assert torch.equal(a, b.cpu())


def test_gemm_fake_shapes_on_meta_tensors():
    # The fake implementation (what torch.compile sees): [..., K] -> [..., N] of out_dtype, without running anything.
    n, k, g = 100, 256, 128
    n_pad, k_pad, groups = ops.gemm_shape(n, k, g)
    meta = {"device": "meta"}
    codes = torch.empty(n_pad * k_pad // 2, dtype=torch.uint8, **meta)
    scales = torch.empty(groups, n_pad, dtype=torch.bfloat16, **meta)
    none = torch.empty(0, dtype=torch.uint8, **meta)
    a = torch.empty(3, 5, k, dtype=torch.bfloat16, **meta)
    y = ops.gemm(a, codes, scales, none, none, None, "s4", g, n, k, None)
    assert y.shape == (3, 5, n) and y.dtype == torch.bfloat16 and y.device.type == "meta"
    assert ops.gemm(a, codes, scales, none, none, None, "s4", g, n, k, torch.float32).dtype == torch.float32


def test_export_traces_linear4bit_as_one_graph_with_dynamic_tokens():
    # torch.export (dynamo, full graph) on meta tensors: the op appears once, with a symbolic M.
    from nibble_torch import Linear4bit

    lin = Linear4bit(256, 96, format="u4", group=64, device="meta")
    x = torch.empty(7, 256, dtype=torch.float16, device="meta")
    ep = torch.export.export(lin, (x,), dynamic_shapes=({0: torch.export.Dim("m", min=2, max=4096)},))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.nibble.gemm.default) == 1
    out = next(n for n in ep.graph.nodes if n.op == "output").args[0][0]
    assert str(out.meta["val"].shape[0]) == "s0" or not str(out.meta["val"].shape[0]).isdigit()
    assert out.meta["val"].shape[1] == 96


def test_torch_compile_fullgraph_cpu(gen):
    # Dynamo + Inductor through the fake implementations, the real CPU kernels at run time: one graph, eager's bytes.
    def f(w):
        codes, scales, zeros, offsets = ops.quantize(w, "u4", 64, torch.float16)
        g = ops.repack(codes, scales, zeros, offsets, "u4", 64, torch.bfloat16)
        return g[1].float() * 2 + 1, g[0]

    w = weights(gen, 48, 256)
    got, want = torch.compile(f, fullgraph=True)(w), f(w)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
