"""engine.machine: which box computed a result, from /proc/cpuinfo's text (pinned samples of three kinds)."""
from engine.machine import cpu_identity, describe, label

INTEL_AMX = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512bw amx_bf16 amx_tile
processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512bw amx_bf16 amx_tile
"""
AMD_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
ARM64 = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm sve sve2\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n"


def test_the_cpu_and_its_vector_units_are_read_on_x86_and_arm():
    assert cpu_identity(INTEL_AMX, "x86_64") == {"cpu": "Intel(R) Xeon(R) Processor", "cpu_units": ["amx_bf16", "avx512f", "avx2"]}
    assert cpu_identity(AMD_AVX2, "x86_64") == {"cpu": "AMD EPYC 7B13", "cpu_units": ["avx2"]}
    # ARM64 names no model: its part number and the architecture stand for it; its features are "Features"
    assert cpu_identity(ARM64, "aarch64") == {"cpu": "0xd4f (aarch64)", "cpu_units": ["sve2", "sve", "asimd"]}
    assert cpu_identity("", "x86_64") == {}  # not Linux: nothing claimed


def test_a_label_says_what_is_known_and_no_more():
    assert label(cpu_identity(AMD_AVX2)) == "AMD EPYC 7B13 (avx2)"
    assert label({"cpu": "x", "cpu_units": []}) == "x (no listed vector unit)"
    assert label({"cpu": "x"}) == "x (vector units not recorded)"
    assert label({"platform": "Linux"}) is None and label(None) is None  # an older report: no claim
    assert label({"cpu": "x", "gpu": "NVIDIA H100"}) == "NVIDIA H100"
    here = describe()
    assert {"platform", "torch", "threads"} <= set(here)
    assert here.get("cpu") is None or label(here)
