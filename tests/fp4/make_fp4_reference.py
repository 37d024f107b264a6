#!/usr/bin/env python3
"""Reference values for tests/fp4 (tachyon's FP4 formats), computed by an implementation written
independently here: brute-force nearest-value searches over decoded code tables instead of tachyon's
threshold / bit-trick encoders, frexp-based exponents instead of float bit manipulation, and
transformers' own gpt-oss MXFP4 decoder. Also writes small ModelOpt and compressed-tensors NVFP4/MXFP4
safetensors files for the loader tests.

Run from the repository root with the project venv:
    /work/venv/py/bin/python tests/fp4/make_fp4_reference.py
Outputs (committed): tests/fp4/fixtures/fp4_reference.json, tests/fp4/fixtures/{modelopt,compressed_tensors}_tiny/
"""
import json
import math
import os
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
F32 = np.float32

# ---- scalar codes, decoded from their bit layouts -------------------------------------------------
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def e2m1_value(code):
    mag = E2M1[code & 7]
    return -mag if code & 8 else mag


def e4m3_value(byte):
    sign = -1.0 if byte & 0x80 else 1.0
    e, m = (byte >> 3) & 0xF, byte & 7
    if e == 15 and m == 7:
        return math.nan
    if e == 0:
        return sign * m * 2.0 ** -9
    return sign * (1 + m / 8) * 2.0 ** (e - 7)


E4M3_POSITIVE = [(b, e4m3_value(b)) for b in range(0x7F)]  # 0x00..0x7e, ascending values


def nearest_even(value, table):
    """table: list of (code, magnitude) ascending; nearest magnitude, ties to the even code."""
    best = None
    for code, mag in table:
        d = abs(value - mag)
        if best is None or d < best[0] or (d == best[0] and code % 2 == 0 and best[1] % 2 == 1):
            best = (d, code)
    return best[1]


def encode_e2m1(x):
    x = float(x)
    sign = 8 if math.copysign(1.0, x) < 0 else 0
    a = min(abs(x), 6.0)
    return sign | nearest_even(a, list(enumerate(E2M1)))


def encode_e4m3(x):
    x = float(x)
    sign = 0x80 if math.copysign(1.0, x) < 0 else 0
    a = min(abs(x), 448.0)
    return sign | nearest_even(a, E4M3_POSITIVE)


def bits(values):
    return [struct.unpack("<I", struct.pack("<f", float(v)))[0] for v in np.asarray(values, dtype=F32).ravel()]


# ---- blocks ---------------------------------------------------------------------------------------
def pack(codes):
    codes = np.asarray(codes, dtype=np.uint8).reshape(-1, 2)
    return (codes[:, 0] | (codes[:, 1] << 4)).astype(np.uint8)


def mx_block(x, rule):
    x = np.asarray(x, dtype=F32)
    amax = float(np.max(np.abs(x)))
    # round-up: 2^ceil(log2(float32(amax / 6)))
    q = float(F32(amax) / F32(6.0))
    if q == 0.0:
        up = -127
    else:
        m, e = math.frexp(q)  # q = m 2^e, m in [0.5, 1)
        up = e - 1 if m == 0.5 else e
    up = max(-127, min(up, 127))
    if amax == 0.0:
        ocp = -127
    else:
        m, e = math.frexp(amax)
        ocp = max(-127, min(e - 1 - 2, 127))

    def encode(exponent):
        scale = 2.0 ** exponent
        codes = [encode_e2m1(float(v) / scale) for v in x]
        err = sum((float(v) - e2m1_value(c) * scale) ** 2 for v, c in zip(x, codes))
        return codes, err

    if rule == "ocp":
        exponent = ocp
        codes, _ = encode(ocp)
    else:
        exponent = up
        codes, err_up = encode(up)
        if rule == "mse" and ocp != up:
            codes_ocp, err_ocp = encode(ocp)
            if err_ocp < err_up:
                exponent, codes = ocp, codes_ocp
    return exponent + 127, codes


def nv_block(x, global_scale):
    x = np.asarray(x, dtype=F32)
    amax = F32(np.max(np.abs(x)))
    scale_byte = encode_e4m3(float(amax / (F32(6.0) * F32(global_scale))))
    scale = F32(e4m3_value(scale_byte)) * F32(global_scale)
    if scale == 0:
        codes = [8 if math.copysign(1.0, float(v)) < 0 else 0 for v in x]
    else:
        codes = [encode_e2m1(float(F32(v) / scale)) for v in x]
    return scale_byte, codes


def quantize_matrix(w, fmt, rule=None, global_scale=None):
    rows, cols = w.shape
    block = 32 if fmt == "mxfp4" else 16
    packed, scales, deq = [], [], np.zeros_like(w)
    for r in range(rows):
        for b in range(cols // block):
            x = w[r, b * block:(b + 1) * block]
            if fmt == "mxfp4":
                s, codes = mx_block(x, rule)
                scale = 2.0 ** (s - 127)
            else:
                s, codes = nv_block(x, global_scale)
                scale = F32(e4m3_value(s)) * F32(global_scale)
            scales.append(s)
            packed.extend(pack(codes).tolist())
            deq[r, b * block:(b + 1) * block] = [F32(e2m1_value(c)) * F32(scale) for c in codes]
    return np.array(packed, np.uint8), np.array(scales, np.uint8), deq


def test_matrix(rng, rows, cols):
    # Mixed magnitudes per block, exact ties, zeros, a zero block and a tiny block.
    w = rng.standard_normal((rows, cols)).astype(F32) * F32(0.05)
    w *= np.exp(rng.standard_normal((rows, cols // 16, 1)) * 1.5).astype(F32).repeat(16, axis=2).reshape(rows, cols)
    w[0, :16] = 0.0
    w[0, 16:32] = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, -6.0], F32)
    w[1, 32:48] *= F32(1e-6)
    w[1, 48] = -0.0
    return w.astype(F32)


def main():
    rng = np.random.default_rng(20261126)
    ref = {"generator": "tests/fp4/make_fp4_reference.py"}

    e2m1_inputs = np.concatenate([
        np.array([0, -0.0, 0.25, 0.2500001, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.0000005, 6, 7, 100, -0.1, -0.75, -5.5, 1e-30], F32),
        (rng.standard_normal(200) * 3).astype(F32)])
    ref["e2m1"] = {"input_bits": bits(e2m1_inputs), "codes": [encode_e2m1(v) for v in e2m1_inputs]}

    e4m3_inputs = np.concatenate([
        np.array([0, -0.0, 448, 449, 464, 480, 1e6, -1e6, 2.0 ** -9, 2.0 ** -10, 3 * 2.0 ** -11, 2.0 ** -6,
                  0.0166, 1.0625, 1.1875, 240, 248, 256, 416, 432], F32),
        np.exp(rng.uniform(-12, 7, 300)).astype(F32) * rng.choice([-1, 1], 300).astype(F32)])
    ref["e4m3"] = {"input_bits": bits(e4m3_inputs), "codes": [encode_e4m3(v) for v in e4m3_inputs]}

    cases = []
    w = test_matrix(rng, 6, 128)
    for rule in ["round-up", "ocp", "mse"]:
        packed, scales, deq = quantize_matrix(w, "mxfp4", rule=rule)
        cases.append({"format": "mxfp4", "rule": rule, "rows": 6, "cols": 128, "input_bits": bits(w),
                      "packed": packed.tolist(), "scales": scales.tolist(), "dequantized_bits": bits(deq)})
    amax = F32(np.max(np.abs(w)))
    modelopt_scale = F32(amax / F32(2688.0))
    ct_scale = F32(F32(1.0) / F32(F32(2688.0) / amax))
    for name, gs in [("modelopt", modelopt_scale), ("compressed-tensors", ct_scale), ("shared", F32(modelopt_scale * F32(1.5)))]:
        packed, scales, deq = quantize_matrix(w, "nvfp4", global_scale=gs)
        cases.append({"format": "nvfp4", "global_scale_kind": name, "global_scale_bits": bits([gs])[0], "rows": 6,
                      "cols": 128, "input_bits": bits(w), "packed": packed.tolist(), "scales": scales.tolist(),
                      "dequantized_bits": bits(deq)})
    ref["matrices"] = cases

    # gpt-oss blocks decoded by transformers' own MXFP4 decoder.
    import torch
    from transformers.integrations.mxfp4 import _convert_moe_packed_tensors
    experts, rows, groups = 2, 3, 2
    blocks = rng.integers(0, 256, (experts, rows, groups, 16), dtype=np.uint8)
    scales = rng.integers(118, 136, (experts, rows, groups), dtype=np.uint8)
    decoded = _convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32)
    # transformers returns [E, cols, rows] (transposed for x @ W); tachyon's view is [rows, cols].
    decoded = decoded.transpose(1, 2).contiguous().numpy()
    ref["gpt_oss"] = {"experts": experts, "rows": rows, "cols": groups * 32, "blocks": blocks.ravel().tolist(),
                      "scales": scales.ravel().tolist(), "dequantized_bits": bits(decoded)}

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "fp4_reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")
    write_checkpoints(rng)


def write_checkpoints(rng):
    """Tiny checkpoints as ModelOpt and compressed-tensors write them (torch dtypes, safetensors library)."""
    import torch
    from safetensors.torch import save_file

    w = (rng.standard_normal((8, 64)) * 0.1).astype(F32)
    w2 = (rng.standard_normal((4, 64)) * 0.3).astype(F32)
    amax = F32(np.max(np.abs(w)))
    gs = F32(amax / F32(2688.0))
    packed, scales, deq = quantize_matrix(w, "nvfp4", global_scale=gs)
    mx_packed, mx_scales, mx_deq = quantize_matrix(w2, "mxfp4", rule="round-up")
    e4m3 = torch.from_numpy(scales.reshape(8, 4)).view(torch.float8_e4m3fn)
    other = torch.from_numpy((rng.standard_normal((8, 8)) * 0.1).astype(F32)).to(torch.bfloat16)

    expected = {"nvfp4_bits": bits(deq), "mxfp4_bits": bits(mx_deq), "other_bits": bits(other.float().numpy())}
    modelopt = {
        "model.layers.0.mlp.up_proj.weight": torch.from_numpy(packed.reshape(8, 32)),
        "model.layers.0.mlp.up_proj.weight_scale": e4m3,
        "model.layers.0.mlp.up_proj.weight_scale_2": torch.tensor(float(gs), dtype=torch.float32),
        "model.layers.0.mlp.up_proj.input_scale": torch.tensor(1.0, dtype=torch.float32),
        "model.layers.0.self_attn.o_proj.weight": other,
    }
    compressed = {
        "model.layers.0.mlp.up_proj.weight_packed": torch.from_numpy(packed.reshape(8, 32)),
        "model.layers.0.mlp.up_proj.weight_scale": e4m3,
        # compressed-tensors keeps the inverse global scale; from the same float, 1 / (1 / gs) rounds back to gs
        # only approximately, so the test allows one ulp.
        "model.layers.0.mlp.up_proj.weight_global_scale": torch.tensor([1.0 / float(gs)], dtype=torch.float32),
        "model.layers.0.mlp.down_proj.weight_packed": torch.from_numpy(mx_packed.reshape(4, 32)),
        "model.layers.0.mlp.down_proj.weight_scale": torch.from_numpy(mx_scales.reshape(4, 2)),
        "model.layers.0.self_attn.o_proj.weight": other,
    }
    for name, tensors in [("modelopt_tiny", modelopt), ("compressed_tensors_tiny", compressed)]:
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        save_file(tensors, os.path.join(d, "model.safetensors"))
    with open(os.path.join(OUT, "checkpoints_expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
