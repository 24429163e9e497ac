"""The precision switch: golden pairs in bf16, how ``auto`` resolves from the CPU's flags and says so, what is refused.

bf16 autocast also runs (emulated, slowly) on CPUs without native bf16, so these run on every machine.
fp32 is the exact mode: tests/test_golden.py runs every golden case in it.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from helpers.frames import load_golden, psnr
from multipassdedup.core import load_model
from multipassdedup.core.precision import CpuInfo, PrecisionChoice, resolve_precision

CPU = torch.device("cpu")
MIN_BF16_PAIR_PSNR = 40.0  # golden pairs (single model calls) in bf16, against the reference's fp32 output
WITH_AVX512_BF16 = CpuInfo("x86_64", frozenset({"avx2", "avx512f", "avx512_bf16"}))
WITH_AMX = CpuInfo("x86_64", frozenset({"avx2", "amx_tile", "amx_bf16"}))
WITHOUT = CpuInfo("x86_64", frozenset({"avx2", "avx512f", "fma"}))
ARM_WITH_BF16 = CpuInfo("aarch64", frozenset({"fp", "asimd", "bf16", "sve"}))
BOTH = ("fp32", "bf16", "fp16")
ALLOWED = (True, "measured fine")


@pytest.fixture(scope="module")
def rife_bf16():
    return load_model("rife", device="cpu", precision="bf16")


@pytest.fixture(scope="module")
def gmfss_bf16():
    return load_model("gmfss", device="cpu", precision="bf16")


@pytest.mark.parametrize("case", ["pair_rife_cel_a_0_2", "pair_rife_cel_a_5_7", "pair_rife_cel_a_16_19",
                                  "pair_gmfss_cel_a_0_2", "pair_gmfss_cel_a_5_7", "pair_gmfss_cel_a_16_19"])
def test_golden_pair_in_bf16(case: str, request) -> None:
    inp, ref, params = load_golden(case)
    model = request.getfixturevalue(f"{params['model']}_bf16")
    assert model.precision == "bf16" and model.compute_dtype == torch.bfloat16
    out = model.interpolate(inp[0], inp[1], params["ts"])
    assert len(out) == len(ref)
    for t, a, b in zip(params["ts"], out, ref):
        assert psnr(a, b) >= MIN_BF16_PAIR_PSNR, f"{case} t={t}: {psnr(a, b):.1f} dB"


def test_bf16_really_computes_in_bf16_and_returns_fp32(rife, rife_bf16) -> None:
    inp, _, params = load_golden("pair_rife_cel_a_0_2")
    x = rife.to_tensor(inp[0][:128, :256])
    y = rife.to_tensor(inp[1][:128, :256])
    exact = rife.interpolate_tensors(x, y, [0.5])[0]
    reduced = rife_bf16.interpolate_tensors(x, y, [0.5])[0]
    assert reduced.dtype == torch.float32  # later passes take outputs as frames: fp32 like the reference's
    assert not torch.equal(exact, reduced)  # the switch changed the arithmetic
    assert float((exact - reduced).abs().max()) < 0.05


def test_a_bf16_variant_holds_bf16_weights_and_leaves_the_fp32_networks_alone(rife) -> None:
    other = rife.with_precision(PrecisionChoice("bf16", "test"))
    assert other.precision == "bf16" and rife.precision == "fp32"
    assert all(p.dtype == torch.bfloat16 for p in other.net.parameters())
    assert all(p.dtype == torch.float32 for p in rife.net.parameters())
    back = other.with_precision(PrecisionChoice("fp32", "test"))  # the fp32 networks as loaded, not a copy
    assert back.net is rife.net and back.networks_as_loaded()["net"] is rife.net


def test_gmfss_bf16_keeps_its_fp32_islands(gmfss_bf16) -> None:
    flow = gmfss_bf16.flownet
    fine = flow.fine_transformer
    assert fine is not None and fine is not flow.transformer
    # fp32: the backbone, the coarse transformer, the fine one's projections, norms and the matching head
    for module in (flow.backbone, flow.transformer, flow.feature_flow_attn, flow.upsampler):
        assert all(p.dtype == torch.float32 for p in module.parameters())
    layer = fine.layers[0].cross_attn_ffn
    assert all(p.dtype == torch.float32 for m in (layer.q_proj, layer.merge, layer.norm1, layer.norm2)
               for p in m.parameters())
    assert all(p.dtype == torch.bfloat16 for p in layer.mlp.parameters())  # the fine feed-forward layers: bf16
    assert all(p.dtype == torch.bfloat16 for p in gmfss_bf16.fusionnet.parameters())
    frame = np.zeros((128, 256, 3), np.uint8)
    frame[40:80, 60:120] = (200, 30, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        work = gmfss_bf16._compute_frames(gmfss_bf16.to_tensor(frame), 1.0)
    assert all(f.dtype == torch.float32 for f in work[0].flow_features)  # the backbone is an fp32 island
    assert work[0].features[0].dtype == torch.bfloat16  # FeatureNet does run in bf16


@pytest.mark.parametrize("cpu, native", [(WITH_AVX512_BF16, True), (WITH_AMX, True), (WITHOUT, False),
                                         (ARM_WITH_BF16, False)])
def test_auto_picks_bf16_only_where_the_cpu_computes_it_natively(cpu: CpuInfo, native: bool) -> None:
    choice = resolve_precision("auto", CPU, BOTH, ALLOWED, "rife", cpu)
    assert choice.precision == ("bf16" if native else "fp32")
    assert choice.reason.startswith("auto: ")
    if native:
        assert "computes bf16 natively" in choice.reason and "measured fine" in choice.reason
    elif cpu.machine == "aarch64":
        assert "only on x86 CPUs" in choice.reason and "aarch64" in choice.reason
    else:
        assert "does not compute bf16 natively" in choice.reason
    # a model whose bf16 does not hold its picture stays fp32 on every CPU, and says why
    kept = resolve_precision("auto", CPU, BOTH, (False, "its picture moves"), "m", cpu)
    assert kept.precision == "fp32" and ("its picture moves" in kept.reason) == native


def test_the_cpu_flags_come_from_proc_cpuinfo(tmp_path) -> None:
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm bf16 i8mm\nCPU implementer\t: 0x41\n"
    assert CpuInfo.parse(x86, "x86_64").native_bf16() == (True, "this CPU computes bf16 natively (avx512_bf16, "
                                                                "amx_bf16)")
    assert CpuInfo.parse(x86.replace(" avx512_bf16 amx_tile amx_bf16", ""), "x86_64").native_bf16()[0] is False
    assert CpuInfo.parse(arm, "aarch64").flags >= {"bf16", "asimd"}
    assert CpuInfo.parse(arm, "aarch64").native_bf16()[0] is False
    assert CpuInfo.parse("", "x86_64").native_bf16()[0] is False
    path = tmp_path / "cpuinfo"
    path.write_text(x86)
    assert CpuInfo.of_this_machine(path).flags >= {"avx512_bf16", "amx_bf16"}
    assert CpuInfo.of_this_machine(tmp_path / "absent").flags == frozenset()


@pytest.mark.parametrize("cpu, expected", [(WITH_AMX, "bf16"), (WITHOUT, "fp32")])
def test_auto_on_the_cpu_says_once_what_it_chose_and_why(cpu: CpuInfo, expected: str, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="multipassdedup.core.models.registry"):
        model = load_model("rife", device="cpu", precision="auto", cpu=cpu)
    lines = [r.getMessage() for r in caplog.records if "precision" in r.getMessage()]
    assert len(lines) == 1, lines  # logged once
    assert model.precision == expected and f"precision {expected} (auto: " in lines[0]
    assert model.precision_reason in lines[0]
    assert ("natively (amx_bf16)" if expected == "bf16" else "does not compute bf16 natively") in lines[0]


def test_resolution_rules() -> None:
    assert resolve_precision("fp32", CPU, BOTH, ALLOWED, cpu=WITH_AMX).precision == "fp32"
    assert resolve_precision("BF16", CPU, BOTH, ALLOWED, cpu=WITHOUT) == PrecisionChoice(
        "bf16", "asked for; this CPU has no native bf16, so it is emulated (slow)")
    assert resolve_precision("fp16", CPU, BOTH, ALLOWED).precision == "fp32"  # fp16 runs on CUDA only
    assert resolve_precision("auto", CPU, ("fp32",), ALLOWED, cpu=WITH_AMX).precision == "fp32"
    assert resolve_precision("auto", torch.device("cuda"), BOTH, ALLOWED).precision == "fp16"
    with pytest.raises(ValueError, match="one of auto, fp32, bf16, fp16"):
        resolve_precision("fp8", CPU, BOTH, ALLOWED)


def test_fp16_on_the_cpu_falls_back_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="multipassdedup.core.models.registry"):
        model = load_model("rife", device="cpu", half=True)
    assert model.precision == "fp32" and model.dtype == torch.float32
    assert any("CUDA only" in r.getMessage() for r in caplog.records)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="gimm runs in fp32 only"):
        load_model("gimm", precision="bf16")
    with pytest.raises(ValueError, match="half=True asks for fp16"):
        load_model("rife", half=True, precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        load_model("rife", precision="double")
