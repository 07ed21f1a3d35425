"""The checkpoint importers (torch.ops.nibble.import_*, nibble_torch.importers, Linear4bit.from_*) on synthetic
checkpoints built here: random normal weights quantized and packed in Python the way each tool stores them (GPTQ
v1 / v2 with act order, AutoAWQ GEMM, compressed-tensors pack-quantized, bitsandbytes NF4 / FP4 with and without
double quantization, GGUF Q4_0 / Q4_1 / Q4_K block bytes, HQQ axis 1). Each import is dequantized with the
independent float64 reference of nibble's plain layout (reference.py) and compared with the checkpoint's own
dequantization formula (computed here from the checkpoint's tensors): exactly where the formats promise it. Error
cases raise. GPU tests (skipped without one): the CUDA paths give the CPU paths' bytes, Linear4bit.from_gptq with
act order against a float64 reference, the GPU error word raising, opcheck on CUDA."""
import pytest
import reference
import torch
from conftest import requires_cuda
from nibble_torch import CheckpointError, Linear4bit, importers, ops

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


# ---- packing helpers -------------------------------------------------------------------------------------------

def to_int32(words):
    """int64 tensor of uint32 values -> int32 with the same bits."""
    words = words & 0xFFFFFFFF
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_nibbles(q, dim, order=None):
    """int64 codes 0..15 -> int32 words of 8 codes along `dim` (nibble i, lowest first, holds element order[i] of
    each group of eight)."""
    q = q.movedim(dim, -1)
    q = q.reshape(*q.shape[:-1], q.shape[-1] // 8, 8).to(torch.int64)
    if order is not None:
        q = q[..., order]
    shifts = torch.arange(8, dtype=torch.int64) * 4
    return to_int32((q << shifts).sum(-1)).movedim(-1, dim)


def words_u32(t):
    return t.to(torch.int64) & 0xFFFFFFFF


def plain_dequant(w):
    """float64 [N, K] of an ImportedWeight, by reference.py (written from the layout's documentation)."""
    return reference.dequantize(w.format, w.codes, w.scales, w.zeros, w.offsets)


def act_order_g_idx(gen, k, g):
    """GPTQ desc_act's g_idx: columns in a random order, the i-th of that order in group i // g."""
    order = torch.randperm(k, generator=gen)
    g_idx = torch.empty(k, dtype=torch.int32)
    g_idx[order] = (torch.arange(k) // g).to(torch.int32)
    return g_idx


# ---- GPTQ ------------------------------------------------------------------------------------------------------

def round_groups(w, g_idx, groups, sdtype, sym, code_min, zero_min):
    """Round-to-nearest quantization of w [N, K] per act-order group (group j: the columns with g_idx == j), codes
    in code_min .. code_min + 15: sym, scale amax / 7.5 and zero code_min + 8; asym, scale (max - min) / 15 (the
    range widened to hold 0) and zero round(code_min - min / scale) clamped to zero_min .. code_min + 15. Returns
    q int64 [N, K], scales [G, N] of sdtype, zeros int64 [G, N]."""
    n, k = w.shape
    code_max = code_min + 15
    q = torch.empty(n, k, dtype=torch.int64)
    scales = torch.empty(groups, n, dtype=sdtype)
    zeros = torch.empty(groups, n, dtype=torch.int64)
    for j in range(groups):
        cols = (g_idx == j).nonzero().squeeze(1)
        wg = w[:, cols]
        if sym:
            s = (wg.abs().amax(1) / 7.5).to(sdtype)
            z = torch.full((n,), code_min + 8, dtype=torch.int64)
        else:
            lo, hi = wg.amin(1).clamp(max=0), wg.amax(1).clamp(min=0)
            s = ((hi - lo) / 15).to(sdtype)
            z = torch.round(code_min - lo / s.float()).clamp(zero_min, code_max).to(torch.int64)
        q[:, cols] = (torch.round(wg / s.float()[:, None]) + z[:, None]).clamp(code_min, code_max).to(torch.int64)
        scales[j], zeros[j] = s, z
    return q, scales, zeros


def make_gptq(gen, n, k, g, sym, v2=False, act_order=False, sdtype=torch.float16):
    """(qweight, qzeros, scales, g_idx, dequant): a GPTQ layer as AutoGPTQ / GPTQModel pack it (sym: z = 8; asym:
    z = round(-min / s) in 1..15 so that v1's z - 1 fits a nibble) and its dequantization scales[g_idx[k], n] *
    (q - z) in float64."""
    geff = k if g == -1 else g
    groups = k // geff
    w = torch.randn(n, k, generator=gen) * 0.05
    g_idx = act_order_g_idx(gen, k, geff) if act_order else (torch.arange(k) // geff).to(torch.int32)
    q, scales, zeros = round_groups(w, g_idx, groups, sdtype, sym, 0, 1)
    qweight = pack_nibbles(q.t(), 0)  # [K/8, N]: word (r, n) nibble i = q(n, 8r + i)
    stored = zeros if v2 else zeros - 1  # v1 stores z - 1
    qzeros = pack_nibbles(stored, 1)  # [G, N/8]
    gi = g_idx.long()
    deq = scales.double()[gi].t() * (q - zeros[gi].t()).double()
    return qweight, qzeros, scales, (g_idx if act_order else None), deq


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_exact(gen, sym, v2, act_order):
    n, k, g = 64, 512, 128
    qweight, qzeros, scales, g_idx, deq = make_gptq(gen, n, k, g, sym, v2, act_order)
    if sym:
        assert (words_u32(qzeros) == (0x88888888 if v2 else 0x77777777)).all()
    w = importers.import_gptq(qweight, qzeros, scales, g_idx, group_size=g, sym=sym,
                              checkpoint_format="gptq_v2" if v2 else "gptq")
    assert (w.format, w.group, w.n, w.k) == ("s4" if sym else "u4", g, n, k)
    assert w.codes.shape == (n, k // 2) and w.scales.shape == (n, k // g) and w.scales.dtype == torch.float16
    assert w.zeros.shape == ((0,) if sym else (n, k // g)) and w.offsets.numel() == 0
    assert int(w.flags.item()) == 0
    got = plain_dequant(w)
    if act_order:
        perm = w.perm.long()
        assert w.perm.dtype == torch.int32
        assert torch.equal(perm, torch.argsort(g_idx.long(), stable=True))
        assert torch.equal(got, deq[:, perm])  # column p of the import is the checkpoint's column perm[p]
        x = torch.randn(k, 3, generator=gen, dtype=torch.float64)
        assert torch.allclose(got @ x[perm], deq @ x, rtol=1e-12, atol=1e-12)  # W x = W_import x[perm]
    else:
        assert w.perm is None
        assert torch.equal(got, deq)


def test_gptq_literal_words():
    # hand-written words, no packing helper: nibble i (lowest first) of qweight word (r, n) is q(n, 8r + i)
    qweight = torch.zeros(4, 8, dtype=torch.int32)
    qweight[0, 0] = 0x76543210
    qweight[3, 7] = to_int32(torch.tensor(0xFEDCBA98))
    qzeros = torch.full((1, 1), to_int32(torch.tensor(0x88888888)).item(), dtype=torch.int32)
    w = importers.import_gptq(qweight, qzeros, torch.ones(1, 8, dtype=torch.float16), group_size=32,
                              checkpoint_format="gptq_v2")
    want = torch.full((8, 32), -8.0, dtype=torch.float64)  # q = 0, z = 8
    want[0, :8] = torch.arange(8) - 8.0
    want[7, 24:] = torch.arange(8, 16) - 8.0
    assert torch.equal(plain_dequant(w), want)


def test_gptq_identity_g_idx_and_detect(gen):
    n, k, g = 32, 256, 64
    qweight, qzeros, scales, _, deq = make_gptq(gen, n, k, g, sym=True, v2=True)
    g_idx = (torch.arange(k) // g).to(torch.int32)  # desc_act off, but saved: no permutation
    w = importers.import_gptq(qweight, qzeros, scales, g_idx, group_size=g, checkpoint_format="detect")
    assert w.perm is None and torch.equal(plain_dequant(w), deq)
    raw = ops.import_gptq(qweight, qzeros, scales, g_idx.long(), 4, g, True, "detect")  # int64 g_idx taken too
    assert torch.equal(raw[4], torch.arange(k, dtype=torch.int32))  # the op still returns the identity perm


@pytest.mark.parametrize(("k", "g", "group"), [(256, -1, 0), (512, -1, 0), (256, 256, 256), (512, 512, 0)])
def test_gptq_per_channel(gen, k, g, group):
    # group_size -1 (or K): one group per row; nibble per-channel (0), but a literal K of 32..256 stays that group.
    n = 48
    qweight, qzeros, scales, _, deq = make_gptq(gen, n, k, g, sym=False)
    w = importers.import_gptq(qweight, qzeros, scales, group_size=g, sym=False)
    assert w.group == group and w.scales.shape == (n, 1)
    assert torch.equal(plain_dequant(w), deq)


def test_gptq_bf16_and_fp32_scales(gen):
    for sdtype in (torch.bfloat16, torch.float32):
        qweight, qzeros, scales, _, deq = make_gptq(gen, 32, 256, 32, sym=True, sdtype=sdtype)
        w = importers.import_gptq(qweight, qzeros, scales, group_size=32)
        assert w.scales.dtype == sdtype and torch.equal(plain_dequant(w), deq)


def test_gptq_bad_data_raises(gen):
    n, k, g = 32, 256, 64
    qweight, qzeros, scales, _, _ = make_gptq(gen, n, k, g, sym=True)  # v1
    with pytest.raises(CheckpointError, match=r"qzeros word \(group 0, columns 0\.\.7\) = 0x77777777 .*v2"):
        importers.import_gptq(qweight, qzeros, scales, group_size=g, checkpoint_format="gptq_v2")
    bad = qzeros.clone()
    bad[2, 3] = 0x77777778
    with pytest.raises(CheckpointError, match=r"group 2, columns 24\.\.31\) = 0x77777778"):
        importers.import_gptq(qweight, bad, scales, group_size=g)
    # v1 asymmetric: a 0xF zero nibble is what an old writer's z = 0 overflow left
    qweight, qzeros, scales, _, _ = make_gptq(gen, n, k, g, sym=False)
    bad = qzeros.clone()
    bad[1, 0] = to_int32(torch.tensor(0x1234F678))
    with pytest.raises(CheckpointError, match=r"0x1234f678 .*0xF"):
        importers.import_gptq(qweight, bad, scales, group_size=g, sym=False)
    with pytest.raises(CheckpointError, match=r"'detect' needs sym=True"):
        importers.import_gptq(qweight, qzeros, scales, group_size=g, sym=False, checkpoint_format="detect")


def test_gptq_bad_g_idx_and_shapes_raise(gen):
    n, k, g = 32, 256, 64
    qweight, qzeros, scales, g_idx, _ = make_gptq(gen, n, k, g, sym=True, act_order=True)
    bad = g_idx.clone()
    bad[(bad == 0).nonzero()[0]] = 1  # group 1 now holds g + 1 columns
    with pytest.raises(CheckpointError, match=r"g_idx is not an act-order group index"):
        importers.import_gptq(qweight, qzeros, scales, bad, group_size=g)
    bad = g_idx.clone()
    bad[5] = k // g  # no such group
    with pytest.raises(CheckpointError, match=r"g_idx is not an act-order group index"):
        importers.import_gptq(qweight, qzeros, scales, bad, group_size=g)
    with pytest.raises(CheckpointError, match=r"g_idx must be int32 \(or int64\) \[K\] = \[256\]"):
        importers.import_gptq(qweight, qzeros, scales, g_idx[:-8], group_size=g)
    with pytest.raises(CheckpointError, match=r"qzeros must be \[4, 4\] for this layer"):
        importers.import_gptq(qweight, qzeros[:2], scales, group_size=g)
    with pytest.raises(CheckpointError, match=r"scales must be \[4, 32\]"):
        importers.import_gptq(qweight, qzeros, scales.t().contiguous(), group_size=g)
    with pytest.raises(CheckpointError, match=r"qweight must be Int \[K/8, N\], got Long"):
        importers.import_gptq(qweight.long(), qzeros, scales, group_size=g)
    with pytest.raises(CheckpointError, match=r"scales must be float32, float16 or bfloat16"):
        importers.import_gptq(qweight, qzeros, scales.to(torch.int16), group_size=g)
    with pytest.raises(CheckpointError, match=r"bits=8 is not supported"):
        importers.import_gptq(qweight, qzeros, scales, bits=8, group_size=g)
    with pytest.raises(CheckpointError, match=r"group"):
        importers.import_gptq(qweight, qzeros, scales, group_size=48)


# ---- AWQ -------------------------------------------------------------------------------------------------------

def make_awq(gen, n, k, g, sdtype=torch.float16):
    """(qweight [K, N/8], qzeros [G, N/8], scales [G, N], dequant): AutoAWQ's WQLinear_GEMM packing (columns in
    AWQ_ORDER within each word), weight = (q - z) * s."""
    w = torch.randn(n, k, generator=gen) * 0.05
    wg = w.reshape(n, k // g, g)
    lo, hi = wg.amin(-1), wg.amax(-1)
    s = ((hi - lo) / 15).clamp(min=1e-5).to(sdtype)  # [N, G]
    z = torch.round(-lo / s.float()).clamp(0, 15).to(torch.int64)
    q = (torch.round(wg / s.float()[..., None]) + z[..., None]).clamp(0, 15).to(torch.int64).reshape(n, k)
    qweight = pack_nibbles(q.t(), 1, AWQ_ORDER)  # [K, N/8]
    qzeros = pack_nibbles(z.t(), 1, AWQ_ORDER)  # [G, N/8]
    deq = (q - z.repeat_interleave(g, 1)).double() * s.double().repeat_interleave(g, 1)
    return qweight, qzeros, s.t().contiguous(), deq


@pytest.mark.parametrize("g", [32, 128])
def test_awq_exact(gen, g):
    n, k = 64, 256
    qweight, qzeros, scales, deq = make_awq(gen, n, k, g)
    w = importers.import_awq(qweight, qzeros, scales, group_size=g)
    assert (w.format, w.group) == ("u4", g) and w.zeros.shape == (n, k // g) and w.perm is None
    assert torch.equal(plain_dequant(w), deq)


def test_awq_order_matters(gen):
    # read with GPTQ's plain nibble order instead, the columns within each word would come out shuffled
    n, k, g = 16, 64, 32
    qweight, qzeros, scales, _ = make_awq(gen, n, k, g)
    w = importers.import_awq(qweight, qzeros, scales, group_size=g)
    q = reference.unpack_codes(w.codes)  # [N, K]
    word = words_u32(qweight[5, 1])
    nibbles = [(int(word) >> (4 * i)) & 15 for i in range(8)]
    assert [int(q[8 + AWQ_ORDER[i], 5]) for i in range(8)] == nibbles


def test_awq_errors(gen):
    qweight, qzeros, scales, _ = make_awq(gen, 16, 128, 32)
    with pytest.raises(CheckpointError, match=r"scales must be \[4, 16\]"):
        importers.import_awq(qweight, qzeros, scales[:2], group_size=32)
    with pytest.raises(CheckpointError, match=r"zero_point=False is not supported"):
        importers.import_awq(qweight, qzeros, scales, group_size=32, zero_point=False)
    with pytest.raises(CheckpointError, match=r"group"):
        importers.import_awq(qweight, qzeros, scales, group_size=48)


# ---- compressed-tensors ----------------------------------------------------------------------------------------

def make_ct(gen, n, k, g, symmetric, act_order=False, sdtype=torch.bfloat16, zp_int8=False):
    """pack-quantized tensors (weight_packed [N, ceil(K/8)] of q + 8, weight_scale [N, G], weight_zero_point packed
    int32 [ceil(N/8), G] of zp + 8 or int8 [N, G], weight_g_idx) and the dequantization (q - zp) * scale."""
    geff = k if g == -1 else g
    groups = k // geff
    w = torch.randn(n, k, generator=gen) * 0.05
    g_idx = act_order_g_idx(gen, k, geff) if act_order else (torch.arange(k) // geff).to(torch.int32)
    gi = g_idx.long()
    q, scale, zp = round_groups(w, g_idx, groups, sdtype, symmetric, -8, -8)
    scale, zp = scale.t().contiguous(), zp.t().contiguous()  # [N, G]
    kp = (k + 7) // 8 * 8
    u = torch.zeros(n, kp, dtype=torch.int64)
    u[:, :k] = q + 8  # padding columns 0
    packed = pack_nibbles(u, 1)
    zpt = None
    if not symmetric:
        if zp_int8:
            zpt = zp.to(torch.int8)
        else:
            npad = (n + 7) // 8 * 8
            zu = torch.zeros(npad, groups, dtype=torch.int64)
            zu[:n] = zp + 8
            zpt = pack_nibbles(zu, 0)  # [ceil(N/8), G]: nibble i of word (r, j) = zp + 8 of row 8r + i
    deq = (q - zp[:, gi]).double() * scale.double()[:, gi]
    return packed, scale, zpt, (g_idx if act_order else None), deq


def ct_unpack(packed, k):
    """compressed-tensors' unpack_from_int32 (packed_dim 1), written out: int32 [N, ceil(K/8)] -> float64 [N, K] of
    the signed values (nibble i of word c, lowest first, is column 8c + i; stored value + 8)."""
    words = words_u32(packed)
    cols = [((words >> (4 * i)) & 15) - 8 for i in range(8)]
    return torch.stack(cols, -1).reshape(packed.shape[0], -1)[:, :k].double()


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
def test_compressed_tensors_exact(gen, symmetric, act_order):
    n, k, g = 40, 256, 64  # N not a multiple of 8: the packed zero point's last word is partial
    packed, scale, zp, g_idx, deq = make_ct(gen, n, k, g, symmetric, act_order)
    w = importers.import_compressed_tensors(packed, scale, [n, k], zp, g_idx, group_size=g, symmetric=symmetric)
    assert (w.format, w.group) == ("s4" if symmetric else "u4", g) and w.scales.dtype == torch.bfloat16
    got = plain_dequant(w)
    if act_order:
        assert torch.equal(w.perm.long(), torch.argsort(g_idx.long(), stable=True))
        assert torch.equal(got, deq[:, w.perm.long()])
    else:
        assert w.perm is None and torch.equal(got, deq)


def test_compressed_tensors_channel_tensor_int8_zp(gen):
    n, k = 24, 196  # K not a multiple of 8: weight_packed's last word is padded
    packed, scale, zp, _, deq = make_ct(gen, n, k, -1, symmetric=False, zp_int8=True, sdtype=torch.float16)
    w = importers.import_compressed_tensors(packed, scale, (n, k), zp, strategy="channel", symmetric=False)
    assert w.group == ops.PER_CHANNEL and torch.equal(plain_dequant(w), deq)
    # strategy "tensor": one scale for the whole weight (symmetric only)
    packed, scale, _, _, _ = make_ct(gen, n, k, -1, symmetric=True, sdtype=torch.float32)
    s = scale[:1, :1].reshape(1)
    w = importers.import_compressed_tensors(packed, s, (n, k), strategy="tensor")
    # the oracle reads the checkpoint's words (unpack_from_int32: nibble i of word c is column 8c + i, minus 8),
    # not the import's codes
    assert torch.equal(w.scales, s.expand(n, 1)) and torch.equal(plain_dequant(w), ct_unpack(packed, k) * s.double())


def test_compressed_tensors_errors(gen):
    n, k, g = 16, 128, 32
    packed, scale, zp, _, _ = make_ct(gen, n, k, g, symmetric=False, zp_int8=True)
    bad = zp.clone()
    bad[3, 2] = 9
    with pytest.raises(CheckpointError, match=r"weight_zero_point \(int8\) holds 9 at \(row 3, group 2\)"):
        importers.import_compressed_tensors(packed, scale, [n, k], bad, group_size=g, symmetric=False)
    with pytest.raises(CheckpointError, match=r"symmetric=True takes no weight_zero_point"):
        importers.import_compressed_tensors(packed, scale, [n, k], zp, group_size=g, symmetric=True)
    with pytest.raises(CheckpointError, match=r"weight_packed must be \[16, 16\]"):
        importers.import_compressed_tensors(packed[:, :8], scale, [n, k], zp, group_size=g, symmetric=False)
    with pytest.raises(CheckpointError, match=r"weight_zero_point must be int32 \(packed\) or int8"):
        importers.import_compressed_tensors(packed, scale, [n, k], zp.long(), group_size=g, symmetric=False)
    with pytest.raises(CheckpointError, match=r"weight_shape must be \[N, K\]"):
        importers.import_compressed_tensors(packed, scale, [n, k, 1], zp, group_size=g, symmetric=False)
    # weight_shape as the checkpoint stores it: an int64 tensor
    w = importers.import_compressed_tensors(packed, scale, torch.tensor([n, k]), zp, group_size=g, symmetric=False)
    assert (w.n, w.k) == (n, k)


# ---- bitsandbytes ----------------------------------------------------------------------------------------------

def bnb_dynamic_map():
    """bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), as it builds it (torch)."""
    data = []
    for i in range(7):
        b = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (b[:-1] + b[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data += [0.0, 1.0]
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def bnb_4bit_table(quant_type):
    """bitsandbytes' quant_map as functional.get_4bit_type builds it: a list (FP4's `-0` is the int 0, so code 8
    is +0.0, where reference.FP4 and nibble's codebook hold -0.0), torch.tensor, divided by its absmax."""
    if quant_type == "nf4":
        data = list(reference.NF4)
    else:
        data = [0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0]
    t = torch.tensor(data)
    return t.div_(t.abs().max())


def nearest(x, table):
    return (x.unsqueeze(-1) - table).abs().argmin(-1)


def make_bnb(gen, n, k, quant_type, blocksize, nested=None):
    """A Params4bit's tensors as bitsandbytes' quantize_4bit stores them: blocks of `blocksize` flat elements,
    absmax fp32, codes = the nearest table entry of x / absmax, the first of a pair in the HIGH nibble. nested:
    None, or the 256-entry map of a double quantization (absmax - offset in blocks of 256, 8-bit codes). Returns
    (kwargs of import_bnb, dequant: quant_map[q] * absmax in fp32, with the nested absmax as bitsandbytes
    computes it: fp32 map[code] * absmax2, then + offset)."""
    table = bnb_4bit_table(quant_type)
    w = torch.randn(n * k, generator=gen) * 0.05
    wb = w.reshape(-1, blocksize)
    absmax = wb.abs().amax(1)
    q = nearest(wb / absmax[:, None], table).reshape(-1)
    weight = ((q[0::2] << 4) | q[1::2]).to(torch.uint8).reshape(-1, 1)  # [N*K/2, 1]
    kw = {"quant_type": quant_type, "blocksize": blocksize}
    if nested is not None:
        offset = absmax.mean()
        v = absmax - offset
        nb = v.numel()
        v_pad = torch.cat([v, torch.zeros((-nb) % 256)])
        absmax2 = v_pad.reshape(-1, 256).abs().amax(1)
        codes = nearest((v_pad.reshape(-1, 256) / absmax2[:, None]).reshape(-1)[:nb], nested)
        blk = torch.arange(nb) // 256
        absmax = nested[codes] * absmax2[blk] + offset  # fp32 product, fp32 sum: bitsandbytes' dequantize
        kw.update(nested_absmax=absmax2, nested_quant_map=nested, nested_blocksize=256, nested_offset=offset.item())
        stored = codes.to(torch.uint8)
    else:
        stored = absmax
    deq = (table[q].reshape(-1, blocksize) * absmax[:, None]).reshape(n, k)  # fp32
    return (weight, stored, table, [n, k]), kw, deq


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [64, 128])
@pytest.mark.parametrize("nested", ["none", "dynamic", "other"])
def test_bnb_exact(gen, quant_type, blocksize, nested):
    n, k = 48, 512  # 384 or 192 blocks: the nested last block is partial
    nmap = {"none": None, "dynamic": bnb_dynamic_map(),
            "other": torch.sort(torch.rand(256, generator=gen) * 2 - 1).values}[nested]  # a map nibble lacks
    args, kw, deq = make_bnb(gen, n, k, quant_type, blocksize, nmap)
    w = importers.import_bnb(*args, **kw)
    assert (w.format, w.group) == (quant_type, blocksize) and w.scales.dtype == torch.float32
    assert w.scales.shape == (n, k // blocksize)
    assert torch.equal(plain_dequant(w).float(), deq)  # float64 product of two fp32: its fp32 rounding is exact


def test_bnb_tables():
    # bitsandbytes' NF4 table is reference.NF4 bit for bit; its FP4 table differs from reference.FP4 (and nibble's
    # codebook) only in the sign of code 8's zero, which the import accepts.
    assert torch.equal(bnb_4bit_table("nf4").view(torch.int32),
                       torch.tensor(reference.NF4, dtype=torch.float32).view(torch.int32))
    fp4, ref = bnb_4bit_table("fp4"), torch.tensor(reference.FP4, dtype=torch.float32)
    assert (fp4.view(torch.int32) != ref.view(torch.int32)).nonzero().flatten().tolist() == [8]
    assert torch.equal(fp4, ref)  # +0.0 == -0.0


def test_bnb_per_channel_blocksize(gen):
    args, kw, deq = make_bnb(gen, 16, 64, "nf4", 64, None)  # blocksize == K: one block per row
    w = importers.import_bnb(*args, **kw)
    assert w.group == 64 and torch.equal(plain_dequant(w).float(), deq)


def test_bnb_errors(gen):
    n, k = 16, 128
    (weight, absmax, table, shape), kw, _ = make_bnb(gen, n, k, "nf4", 64, None)
    fp4 = bnb_4bit_table("fp4")
    with pytest.raises(CheckpointError, match=r"quant_map is not bitsandbytes' nf4 table bit for bit"):
        importers.import_bnb(weight, absmax, fp4, shape, **kw)
    with pytest.raises(CheckpointError, match=r"absmax must be float32 \[32\]"):
        importers.import_bnb(weight, absmax[:16], table, shape, **kw)
    with pytest.raises(CheckpointError, match=r"weight must hold N\*K/2 = 1024 bytes"):
        importers.import_bnb(weight[:512], absmax, table, shape, **kw)
    with pytest.raises(CheckpointError, match=r"needs both nested_absmax and nested_quant_map"):
        importers.import_bnb(weight, absmax, table, shape, nested_absmax=absmax[:1], **kw)
    with pytest.raises(CheckpointError, match=r"quant_type 'int4'"):
        importers.import_bnb(weight, absmax, table, shape, quant_type="int4", blocksize=64)
    with pytest.raises(CheckpointError, match=r"group"):
        importers.import_bnb(weight, absmax.repeat(2), table, shape, quant_type="nf4", blocksize=32 + 16)


# ---- GGUF ------------------------------------------------------------------------------------------------------

def half_bytes(x):
    """fp16 values -> their little-endian bytes [..., 2] (uint8)."""
    return x.to(torch.float16).contiguous().view(torch.int16).to(torch.int32).unsqueeze(-1).bitwise_right_shift(
        torch.tensor([0, 8], dtype=torch.int32)).bitwise_and(0xFF).to(torch.uint8)


def read_half(b):
    """uint8 [..., 2] little-endian -> float32 of the fp16."""
    bits = b[..., 0].to(torch.int32) | (b[..., 1].to(torch.int32) << 8)
    return torch.where(bits >= 2**15, bits - 2**16, bits).to(torch.int16).view(torch.float16).float()


def qs32(q):
    """[..., 32] codes -> [..., 16] bytes: element j in the low nibble of byte j, element j + 16 in the high one."""
    return (q[..., :16] | (q[..., 16:] << 4)).to(torch.uint8)


def make_gguf_q4_0(gen, n, k):
    """ggml's quantize_row_q4_0_ref: d = (the element of largest magnitude) / -8, q = clamp(rint(x / d) + 8)."""
    x = (torch.randn(n, k // 32, 32, generator=gen) * 0.05)
    imax = x.abs().argmax(-1, keepdim=True)
    d = (torch.gather(x, -1, imax).squeeze(-1) / -8).half()
    q = (torch.round(x / d.float()[..., None]) + 8).clamp(0, 15).to(torch.int64)
    return torch.cat([half_bytes(d), qs32(q)], -1).reshape(-1)  # 18 bytes per block


def make_gguf_q4_1(gen, n, k):
    x = (torch.randn(n, k // 32, 32, generator=gen) * 0.05)
    lo, hi = x.amin(-1), x.amax(-1)
    d, m = ((hi - lo) / 15).half(), lo.half()
    q = torch.round((x - m.float()[..., None]) / d.float()[..., None]).clamp(0, 15).to(torch.int64)
    return torch.cat([half_bytes(d), half_bytes(m), qs32(q)], -1).reshape(-1)  # 20 bytes per block


def make_gguf_q4_k(gen, n, k):
    """ggml's block_q4_K: per 32 elements a 6-bit scale sc and min mn of super-scales d, dmin (fp16), x ~ d sc q -
    dmin mn; scales[12] packed as quantize_row_q4_K_ref packs them; qs: chunk c holds sub-blocks 2c (low nibbles)
    and 2c + 1 (high nibbles)."""
    x = (torch.randn(n, k // 256, 8, 32, generator=gen) * 0.05)
    lo = x.amin(-1).clamp(max=0)
    scale, mins = (x.amax(-1) - lo) / 15, -lo  # [n, B, 8]
    d, dmin = (scale.amax(-1) / 63).half(), (mins.amax(-1) / 63).half()  # [n, B]
    sc = torch.round(scale / d.float()[..., None]).clamp(0, 63).to(torch.int64)
    mn = torch.round(mins / dmin.float()[..., None]).clamp(0, 63).to(torch.int64)
    step = (d.float()[..., None] * sc.float()).clamp(min=1e-8)
    q = torch.round((x + (dmin.float()[..., None] * mn.float())[..., None]) / step[..., None]).clamp(0, 15)
    q = q.to(torch.int64)
    s = torch.zeros(n, k // 256, 12, dtype=torch.int64)
    s[..., 0:4] = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    s[..., 4:8] = mn[..., :4] | ((mn[..., 4:] >> 4) << 6)
    s[..., 8:12] = (sc[..., 4:] & 15) | ((mn[..., 4:] & 15) << 4)
    qs = (q[..., 0::2, :] | (q[..., 1::2, :] << 4)).reshape(n, k // 256, 128)
    blk = torch.cat([half_bytes(d), half_bytes(dmin), s.to(torch.uint8), qs.to(torch.uint8)], -1)
    return blk.reshape(-1)  # 144 bytes per super-block


def gguf_dequant(data, type, n, k):
    """ggml-quants.c dequantize_row_* (and gguf-py's numpy dequantizer), in float32, from the bytes."""
    if type in ("Q4_0", "Q4_1"):
        bb = 18 if type == "Q4_0" else 20
        blk = data.reshape(n, k // 32, bb)
        d = read_half(blk[..., 0:2])[..., None]
        qs = blk[..., bb - 16:].to(torch.int64)
        q = torch.cat([qs & 15, qs >> 4], -1).float()  # element j low nibble of qs[j], j + 16 high nibble
        if type == "Q4_0":
            return ((q - 8) * d).reshape(n, k)
        return (q * d + read_half(blk[..., 2:4])[..., None]).reshape(n, k)
    blk = data.reshape(n, k // 256, 144)
    d, dmin = read_half(blk[..., 0:2]), read_half(blk[..., 2:4])
    sb = blk[..., 4:16].to(torch.int64)
    sc = torch.empty(n, k // 256, 8, dtype=torch.int64)
    mn = torch.empty_like(sc)
    for j in range(8):  # get_scale_min_k4
        if j < 4:
            sc[..., j], mn[..., j] = sb[..., j] & 63, sb[..., j + 4] & 63
        else:
            sc[..., j] = (sb[..., j + 4] & 15) | ((sb[..., j - 4] >> 6) << 4)
            mn[..., j] = (sb[..., j + 4] >> 4) | ((sb[..., j] >> 6) << 4)
    qs = blk[..., 16:].to(torch.int64).reshape(n, k // 256, 4, 32)
    q = torch.stack([qs & 15, qs >> 4], 3).reshape(n, k // 256, 8, 32).float()
    dd = (d[..., None] * sc.float())[..., None]
    dm = (dmin[..., None] * mn.float())[..., None]
    return (dd * q - dm).reshape(n, k)


@pytest.mark.parametrize("type", ["Q4_0", "Q4_1", "Q4_K"])
def test_gguf_exact(gen, type):
    n, k = 24, 512
    data = {"Q4_0": make_gguf_q4_0, "Q4_1": make_gguf_q4_1, "Q4_K": make_gguf_q4_k}[type](gen, n, k)
    assert data.numel() == n * k // {"Q4_0": 32, "Q4_1": 32, "Q4_K": 256}[type] * {"Q4_0": 18, "Q4_1": 20,
                                                                                     "Q4_K": 144}[type]
    w = importers.import_gguf(data, type, n, k)
    fmt, sdtype = {"Q4_0": ("s4", torch.float16), "Q4_1": ("affine_u4", torch.float16),
                   "Q4_K": ("affine_u4", torch.float32)}[type]
    assert (w.format, w.group, w.scales.dtype) == (fmt, 32, sdtype)
    assert w.offsets.numel() == (0 if type == "Q4_0" else n * k // 32)
    # the float64 dequantization rounds once to fp32: ggml's fp32 arithmetic (exact products, one rounded sum)
    assert torch.equal(plain_dequant(w).float(), gguf_dequant(data, type, n, k))


def test_gguf_errors(gen):
    data = make_gguf_q4_0(gen, 4, 64)
    with pytest.raises(CheckpointError, match=r"a Q4_0 tensor of \[N, K\] = \[4, 64\] is 144 bytes, data has 143"):
        importers.import_gguf(data[:-1], "Q4_0", 4, 64)
    with pytest.raises(CheckpointError, match=r"type 'Q8_0'"):
        importers.import_gguf(data, "Q8_0", 4, 64)
    with pytest.raises(CheckpointError, match=r"group"):
        importers.import_gguf(data, "Q4_K", 4, 64)  # K not a multiple of 256
    with pytest.raises(CheckpointError, match=r"data must be uint8"):
        importers.import_gguf(data.to(torch.int8), "Q4_0", 4, 64)


# ---- HQQ -------------------------------------------------------------------------------------------------------

def make_hqq(gen, n, k, g, dtype=torch.float16):
    """An HQQLinear (axis 1): W viewed as [N*G, g], per group row scale s and a float zero z (off the integers, as
    the proximal optimizer leaves it), q = clamp(rint(W / s + z)); W_q = pack_4bit_u8 (rows r and r + N*G/2 in the
    high and low nibbles of row r). Returns (W_q, scale, zero, dequant (q - z) * s in float64)."""
    w = (torch.randn(n, k, generator=gen) * 0.05).reshape(-1, g)
    lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    s = ((hi - lo) / 15).to(dtype)
    z = (-lo / s.float() + (torch.rand(lo.shape, generator=gen) - 0.5) * 0.3).to(dtype)
    q = torch.round(w / s.float() + z.float()).clamp(0, 15).to(torch.int64)
    half = q.shape[0] // 2
    w_q = ((q[:half] << 4) | q[half:]).to(torch.uint8)
    deq = ((q.double() - z.double()) * s.double()).reshape(n, k)
    return w_q, s, z, deq


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("g", [32, 64])
def test_hqq_exact(gen, dtype, g):
    n, k = 32, 256
    w_q, s, z, deq = make_hqq(gen, n, k, g, dtype)
    assert w_q.shape == (n * k // g // 2, g)
    w = importers.import_hqq(w_q, s, z, [n, k], group_size=g)
    assert (w.format, w.group, w.scales.dtype, w.offsets.dtype) == ("affine_u4", g, torch.float32, torch.float32)
    # q * s and z * s are exact in fp32 for 16-bit s and z, so the plain layout holds (q - z) * s exactly
    assert torch.equal(plain_dequant(w), deq)
    # view_as_float: W_q's bytes relabelled as the compute dtype, same import
    v = importers.import_hqq(w_q.view(dtype), s, z, [n, k], group_size=g)
    assert all(torch.equal(a, b) for a, b in zip(v.plain, w.plain))


def test_hqq_per_channel_and_errors(gen):
    n, k = 16, 512
    w_q, s, z, deq = make_hqq(gen, n, k, k)
    w = importers.import_hqq(w_q, s, z, (n, k), group_size=None)
    assert w.group == ops.PER_CHANNEL and torch.equal(plain_dequant(w), deq)
    with pytest.raises(CheckpointError, match=r"axis=0 is not supported"):
        importers.import_hqq(w_q, s, z, (n, k), group_size=None, axis=0)
    with pytest.raises(CheckpointError, match=r"W_q must be 8 rows of 512 bytes"):
        importers.import_hqq(w_q[:4], s, z, (n, k), group_size=None)
    with pytest.raises(CheckpointError, match=r"nbits=2"):
        importers.import_hqq(w_q, s, z, (n, k), group_size=None, nbits=2)


# ---- permute_columns -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_permute_columns_cpu(gen, dtype):
    k = 96
    x = torch.randn(2, 3, k, generator=gen).to(dtype)
    perm = torch.randperm(k, generator=gen).to(torch.int32)
    assert torch.equal(ops.permute_columns(x, perm), x[..., perm.long()])
    xt = torch.randn(k, 5, generator=gen).to(dtype).t()  # non-contiguous input
    assert torch.equal(ops.permute_columns(xt, perm), xt[..., perm.long()])
    bad = perm.clone()
    bad[0] = bad[1]
    with pytest.raises(RuntimeError, match=r"nibble::permute_columns: invalid argument"):
        ops.permute_columns(x, bad)  # the CPU path checks that perm is a permutation
    with pytest.raises(RuntimeError, match=r"perm must be \[K\] = \[96\]"):
        ops.permute_columns(x, perm[:-1])
    with pytest.raises(RuntimeError, match=r"x must be float16 or bfloat16"):
        ops.permute_columns(x.float(), perm)


# ---- Linear4bit.from_* on the CPU (construction only: the GEMM needs a GPU) ------------------------------------

def test_linear4bit_from_imports_cpu(gen):
    n, k, g = 64, 256, 64
    qweight, qzeros, scales, g_idx, _ = make_gptq(gen, n, k, g, sym=False, act_order=True)
    bias = torch.randn(n, generator=gen)
    lin = Linear4bit.from_gptq(qweight, qzeros, scales, g_idx, group_size=g, sym=False, bias=bias)
    w = importers.import_gptq(qweight, qzeros, scales, g_idx, group_size=g, sym=False)
    assert (lin.in_features, lin.out_features, lin.format, lin.group, lin.act_dtype) == (k, n, "u4", g, torch.float16)
    assert torch.equal(lin.perm, w.perm) and "act_order=True" in repr(lin)
    for a, b in zip((lin.codes, lin.scales, lin.zeros, lin.offsets), w.repack(torch.float16)):
        assert torch.equal(a, b)
    assert torch.equal(lin.bias, bias.half())
    # the state dict round-trips into a module built with act_order=True
    other = Linear4bit(k, n, format="u4", group=g, act_order=True)
    other.load_state_dict(lin.state_dict())
    assert torch.equal(other.perm, lin.perm)
    # without act order: no perm buffer (as from_linear's modules)
    qweight, qzeros, scales, _, _ = make_gptq(gen, n, k, g, sym=True)
    assert Linear4bit.from_gptq(qweight, qzeros, scales, group_size=g).perm is None
    # each format's classmethod builds a module of its format and act_dtype
    args, kw, _ = make_bnb(gen, n, k, "nf4", 64, None)
    assert Linear4bit.from_bnb(*args, act_dtype=torch.bfloat16, **kw).format == "nf4"
    lin = Linear4bit.from_gguf(make_gguf_q4_k(gen, n, k), "Q4_K", n, k)
    assert (lin.format, lin.group, lin.act_dtype) == ("affine_u4", 32, torch.float16)
    w_q, s, z, _ = make_hqq(gen, n, k, 64, torch.bfloat16)
    assert Linear4bit.from_hqq(w_q, s, z, [n, k], group_size=64).act_dtype == torch.float16
    qweight, qzeros, scales, _ = make_awq(gen, n, k, 64)
    assert Linear4bit.from_awq(qweight, qzeros, scales, group_size=64).format == "u4"
    packed, scale, _, wg, _ = make_ct(gen, n, k, 64, True, act_order=True)
    lin = Linear4bit.from_compressed_tensors(packed, scale, [n, k], weight_g_idx=wg, group_size=64)
    assert lin.act_dtype == torch.bfloat16 and lin.perm is not None
    plain = ops.quantize(torch.randn(16, 64, generator=gen), "s4", 32)
    bad = torch.arange(64, dtype=torch.int32)
    bad[3] = 64  # not a permutation: the GPU permute_columns would read 0 there
    with pytest.raises(ValueError, match=r"perm must be a permutation of 0 \.\. 63"):
        Linear4bit.from_plain(*plain, "s4", 32, perm=bad)
    with pytest.raises(ValueError, match=r"in_features 36 is not a multiple of 8"):
        Linear4bit.from_plain(*ops.quantize(torch.randn(8, 36), "s4", 0), "s4", 0)  # the GEMM reads 8 at a time


# ---- fake (meta) implementations -------------------------------------------------------------------------------

def cpu_cases(gen):
    """(op, args) for every import op and permute_columns on CPU tensors."""
    n, k, g = 32, 256, 64
    qweight, qzeros, scales, g_idx, _ = make_gptq(gen, n, k, g, sym=False, act_order=True)
    awq = make_awq(gen, n, k, g)
    packed, scale, zp, wg, _ = make_ct(gen, n, k, g, symmetric=False, act_order=True)
    (bw, babs, bmap, bshape), bkw, _ = make_bnb(gen, n, k, "nf4", 64, bnb_dynamic_map())
    w_q, s, z, _ = make_hqq(gen, n, k, 64)
    x = torch.randn(3, k, generator=gen).half()
    return [
        (torch.ops.nibble.import_gptq.default, (qweight, qzeros, scales, g_idx, 4, g, False, "gptq")),
        (torch.ops.nibble.import_gptq.default, (qweight, qzeros, scales, None, 4, g, False, "gptq")),
        (torch.ops.nibble.import_awq.default, (*awq[:3], 4, g, True)),
        (torch.ops.nibble.import_compressed_tensors.default,
         (packed, scale, [n, k], zp, wg, 4, "group", g, False)),
        (torch.ops.nibble.import_bnb.default,
         (bw, babs, bmap, bshape, "nf4", 64, bkw["nested_absmax"], bkw["nested_quant_map"], 256,
          bkw["nested_offset"])),
        (torch.ops.nibble.import_gguf.default, (make_gguf_q4_1(gen, n, k), "Q4_1", n, k)),
        (torch.ops.nibble.import_gguf.default, (make_gguf_q4_k(gen, n, k), "Q4_K", n, k)),
        (torch.ops.nibble.import_hqq.default, (w_q, s, z, [n, k], 64, 4, 1)),
        (torch.ops.nibble.permute_columns.default, (x, torch.randperm(k, generator=gen).to(torch.int32))),
    ]


def test_opcheck_cpu(gen):
    # schema, fake (meta) implementation against the real one (shapes, dtypes, strides), AOT dispatch
    for op, args in cpu_cases(gen):
        torch.library.opcheck(op, args)


def test_fakes_match_real_outputs(gen):
    from torch._subclasses.fake_tensor import FakeTensorMode

    for op, args in cpu_cases(gen):
        real = op(*args)
        real = real if isinstance(real, tuple) else (real,)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            fake = op(*fargs)
        fake = fake if isinstance(fake, tuple) else (fake,)
        assert [(t.shape, t.dtype) for t in fake] == [(t.shape, t.dtype) for t in real], op


# ---- GPU -------------------------------------------------------------------------------------------------------

def _cuda(a):
    return a.cuda() if isinstance(a, torch.Tensor) else a


@requires_cuda
def test_gpu_imports_equal_cpu(gen):
    # nibble's promise: the GPU importers write the CPU paths' bytes (perm and flags included).
    for op, args in cpu_cases(gen):
        cpu = op(*args)
        gpu = op(*[_cuda(a) for a in args])
        cpu = cpu if isinstance(cpu, tuple) else (cpu,)
        gpu = gpu if isinstance(gpu, tuple) else (gpu,)
        for a, b in zip(cpu, gpu):
            assert b.is_cuda and torch.equal(a, b.cpu()), op
    # a CPU g_idx with CUDA weights (no synchronization for the permutation) gives the same
    qweight, qzeros, scales, g_idx, _ = make_gptq(gen, 64, 512, 128, sym=True, act_order=True)
    cpu = ops.import_gptq(qweight, qzeros, scales, g_idx, 4, 128, True, "gptq")
    gpu = ops.import_gptq(qweight.cuda(), qzeros.cuda(), scales.cuda(), g_idx, 4, 128, True, "gptq")
    for a, b in zip(cpu, gpu):
        assert torch.equal(a, b.cpu())


@requires_cuda
@pytest.mark.parametrize("sym", [True, False])
def test_linear4bit_from_gptq_act_order_forward(gen, sym):
    n, k, g = 256, 512, 128
    qweight, qzeros, scales, g_idx, deq = make_gptq(gen, n, k, g, sym=sym, act_order=True)
    bias = torch.randn(n, generator=gen) * 0.1
    lin = Linear4bit.from_gptq(qweight.cuda(), qzeros.cuda(), scales.cuda(), g_idx, group_size=g, sym=sym,
                               bias=bias.cuda())
    assert lin.perm is not None and lin.perm.is_cuda
    x = torch.randn(2, 5, k, generator=gen).half()
    y = lin(x.cuda())
    assert y.shape == (2, 5, n) and y.dtype == torch.float16
    ref = x.double() @ deq.t() + bias.half().double()  # the checkpoint's own weight: W x, no permutation
    # fp16 output: test_gemm's OUT_BOUND (each weight rounded to fp16 once, then C rounded once)
    assert reference.rel_frobenius(y, ref) <= 2e-3
    # and without the permutation it would be wrong
    lin.perm = None
    assert reference.rel_frobenius(lin(x.cuda()), ref) > 0.1


@requires_cuda
def test_gpu_flags_raise(gen):
    n, k, g = 64, 256, 64
    qweight, qzeros, scales, _, _ = make_gptq(gen, n, k, g, sym=True)
    bad = qzeros.clone()
    bad[1, 2] = 0x77777707
    out = ops.import_gptq(qweight.cuda(), bad.cuda(), scales.cuda(), None, 4, g, True, "gptq")
    assert int(out[5].item()) & 1  # kImportBadZeroWord: the op does not raise, it returns the word
    with pytest.raises(CheckpointError, match=r"flags=0x1.*group 1, columns 16\.\.23\) = 0x77777707"):
        importers.import_gptq(qweight.cuda(), bad.cuda(), scales.cuda(), group_size=g)
    w = importers.import_gptq(qweight.cuda(), bad.cuda(), scales.cuda(), group_size=g, check=False)
    assert int(w.flags.item()) == 1  # check=False: the caller's to read
    packed, scale, zp, _, _ = make_ct(gen, n, k, g, symmetric=False, zp_int8=True)
    zp = zp.clone()
    zp[0, 0] = -9
    out = ops.import_compressed_tensors(packed.cuda(), scale.cuda(), [n, k], zp.cuda(), None, 4, "group", g, False)
    assert int(out[5].item()) & 4  # kImportBadZeroPoint
    with pytest.raises(CheckpointError, match=r"flags=0x4.*holds -9 at \(row 0, group 0\)"):
        importers.import_compressed_tensors(packed.cuda(), scale.cuda(), [n, k], zp.cuda(), group_size=g,
                                            symmetric=False)


@requires_cuda
def test_opcheck_cuda(gen):
    n, k, g = 32, 256, 64
    qweight, qzeros, scales, g_idx, _ = make_gptq(gen, n, k, g, sym=True, act_order=True)
    torch.library.opcheck(torch.ops.nibble.import_gptq.default,
                          (qweight.cuda(), qzeros.cuda(), scales.cuda(), g_idx.cuda(), 4, g, True, "gptq"))
    x = torch.randn(4, k, generator=gen).half().cuda()
    perm = torch.randperm(k, generator=gen).to(torch.int32).cuda()
    torch.library.opcheck(torch.ops.nibble.permute_columns.default, (x, perm))
