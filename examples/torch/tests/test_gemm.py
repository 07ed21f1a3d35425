"""nibble::gemm (GPU) against a float64 reference of the dequantized weight: the reference multiplies A by the
weight that tests/reference.py dequantizes on the host from the PLAIN codes and scales (not from nibble's GEMM or
its GEMM layout), with the scales, offsets and table values rounded to the activation type as the GEMM layout holds
them."""
import pytest
import reference
import torch
from conftest import requires_cuda
from nibble_torch import ops

pytestmark = requires_cuda

# Relative Frobenius bounds of C (fp32 output) against the float64 reference. What the GEMM rounds beyond the
# reference: each dequantized weight once to the activation type (unit roundoff u = 2^-11 fp16, 2^-8 bf16: the
# error of a sum of K such products with random signs is about u / sqrt(3) relative, 2.8e-4 / 2.3e-3) and its fp32
# accumulation (negligible). The bounds leave about 3x for that: the bounds of nibble's own GEMM tests
# (tests/gemm/test_gemm_run.cu). A T output adds one rounding of C (another u / sqrt(3)).
BOUND = {torch.float16: 1e-3, torch.bfloat16: 8e-3}
OUT_BOUND = {torch.float16: 2e-3, torch.bfloat16: 1.2e-2}

CASES = [  # (format, group)
    ("s4", 128), ("s4", 32), ("s4", 0), ("u4", 128), ("u4", 32), ("nf4", 64), ("fp4", 64), ("affine_u4", 32),
    ("affine_u4", 128),
]


def make(gen, fmt, g, n, k, act, scale_dtype=None):
    w = torch.randn(n, k, generator=gen) * 0.05
    plain = ops.quantize(w.cuda(), fmt, g, scale_dtype or act)
    packed = ops.repack(*plain, fmt, g, act)
    ref_w = reference.dequantize(fmt, *[t.cpu() for t in plain], act_dtype=act)
    return w, plain, packed, ref_w


@pytest.mark.parametrize("act", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fmt,g", CASES)
@pytest.mark.parametrize("m", [1, 7, 16, 33, 64, 300])
def test_gemm_matches_float64_reference(gen, act, fmt, g, m):
    n, k = 384, 1024
    _, _, packed, ref_w = make(gen, fmt, g, n, k, act)
    a = torch.randn(m, k, generator=gen).to(act)
    c = ops.gemm(a.cuda(), *packed, None, fmt, g, n, k, torch.float32)
    assert c.shape == (m, n) and c.dtype == torch.float32
    ref = a.double() @ ref_w.t()
    err = reference.rel_frobenius(c, ref)
    print(f"{fmt} g{g} {act} M={m}: relative Frobenius error {err:.2e}")
    assert err <= BOUND[act]


@pytest.mark.parametrize("act", [torch.float16, torch.bfloat16])
def test_gemm_bias_out_dtype_and_batch_dims(gen, act):
    n, k = 200, 512  # N not a multiple of 16: padded atoms
    _, _, packed, ref_w = make(gen, "s4", 128, n, k, act)
    a = torch.randn(2, 3, k, generator=gen).to(act)
    bias = torch.randn(n, generator=gen).to(act)
    c = ops.gemm(a.cuda(), *packed, bias.cuda(), "s4", 128, n, k)
    assert c.shape == (2, 3, n) and c.dtype == act
    ref = a.double() @ ref_w.t() + bias.double()
    assert reference.rel_frobenius(c, ref) <= OUT_BOUND[act]


def test_gemm_reads_strided_and_offset_activations(gen):
    # a non-contiguous A and one at an odd element offset (not 16-byte aligned) give the contiguous A's C
    n, k = 256, 512
    _, _, packed, _ = make(gen, "s4", 128, n, k, torch.float16)
    big = torch.randn(9, 2 * k + 1, generator=gen).half().cuda()
    strided = big[:, 1:k + 1]  # offset by one element, row pitch 2k + 1
    c = ops.gemm(strided, *packed, None, "s4", 128, n, k)
    c_ref = ops.gemm(strided.contiguous(), *packed, None, "s4", 128, n, k)
    assert torch.equal(c, c_ref)


def test_gemm_runs_on_the_current_stream(gen):
    # On a side stream: a long sleep, then A is overwritten, then the GEMM. Only a GEMM ordered after the copy on
    # that stream sees the new A; one launched on another stream would run during the sleep and read the old A.
    n, k = 1024, 1024
    _, _, packed, ref_w = make(gen, "s4", 128, n, k, torch.float16)
    a_old = torch.randn(4, k, generator=gen).half()
    a_new = torch.randn(4, k, generator=gen).half()
    a = a_old.cuda()
    a_new_dev = a_new.cuda()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        torch.cuda._sleep(100_000_000)  # ~50 ms of GPU cycles
        a.copy_(a_new_dev)
        c = ops.gemm(a, *packed, None, "s4", 128, n, k, torch.float32)
    torch.cuda.synchronize()
    assert reference.rel_frobenius(c, a_new.double() @ ref_w.t()) <= BOUND[torch.float16]


def test_bad_status_raises_with_its_message(gen):
    n, k = 64, 256
    _, _, packed, _ = make(gen, "s4", 128, n, k, torch.float16)
    a = torch.randn(3, k, generator=gen).half().cuda()
    with pytest.raises(RuntimeError, match=r"repacked for"):  # a bf16 A for an fp16 weight
        ops.gemm(a.bfloat16(), *packed, None, "s4", 128, n, k)
    with pytest.raises(RuntimeError, match=r"nibble::gemm: .*\(Status \d+\)"):  # per-channel with K % 8 != 0
        w = torch.randn(16, 250, generator=gen).half().cuda()
        p = ops.repack(*ops.quantize(w, "s4", 0, torch.float16), "s4", 0, torch.float16)
        ops.gemm(torch.randn(2, 250, generator=gen).half().cuda(), *p, None, "s4", 0, 16, 250)


def test_opcheck_gemm(gen):
    n, k = 96, 256
    _, _, packed, _ = make(gen, "u4", 64, n, k, torch.float16)
    a = torch.randn(5, k, generator=gen).half().cuda()
    bias = torch.randn(n, generator=gen).half().cuda()
    torch.library.opcheck(torch.ops.nibble.gemm.default, (a, *packed, bias, "u4", 64, n, k, None))
    torch.library.opcheck(torch.ops.nibble.gemm.default, (a, *packed, None, "u4", 64, n, k, torch.float32))
