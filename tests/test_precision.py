"""`train.mixed_precision = 'auto'`: bfloat16 where the hardware computes
it, float32 elsewhere, from the machine's CPU flags and GPUs."""

import pytest

from vse_tf.training import precision

# /proc/cpuinfo flags lines, cut down: an AVX2 EPYC, an AVX-512 EPYC (Zen
# 4) and a Sapphire Rapids Xeon.
AVX2 = "fpu vme de sse sse2 ssse3 fma avx avx2 bmi2"
ZEN4 = AVX2 + " avx512f avx512bw avx512_vnni avx512_bf16"
XEON_AMX = AVX2 + " avx512f avx512bw amx_bf16 amx_tile amx_int8"


@pytest.mark.parametrize(
    "flags, policy",
    [
        (AVX2, "float32"),
        (ZEN4, "mixed_bfloat16"),
        (XEON_AMX, "mixed_bfloat16"),
        # Neighbouring names are not the flag.
        (AVX2 + " avx512bw avx512_fp16", "float32"),
    ],
)
def test_auto_on_a_cpu_follows_its_bfloat16_flags(flags, policy):
    choice = precision.choose("auto", cpu_flags=flags, gpus=[])
    assert choice.policy == policy
    if policy == "float32":
        assert "no amx_bf16 or avx512_bf16 flag" in choice.reason
    else:
        assert "bf16" in choice.reason


@pytest.mark.parametrize(
    "gpus, policy",
    [
        ([("NVIDIA H100", (9, 0))], "mixed_bfloat16"),
        ([("NVIDIA A100", (8, 0))], "mixed_bfloat16"),
        ([("Tesla T4", (7, 5))], "float32"),
        ([("NVIDIA A100", (8, 0)), ("Tesla V100", (7, 0))], "float32"),
    ],
)
def test_auto_on_gpus_needs_compute_capability_8(gpus, policy):
    # The GPUs decide, whatever the CPU has.
    choice = precision.choose("auto", cpu_flags=ZEN4, gpus=gpus)
    assert choice.policy == policy
    if policy == "float32":
        assert "Tesla" in choice.reason and "compute capability 7." in (
            choice.reason
        )


@pytest.mark.parametrize(
    "setting, policy",
    [
        (None, "float32"),
        ("float32", "float32"),
        ("mixed_bfloat16", "mixed_bfloat16"),
        ("mixed_float16", "mixed_float16"),
    ],
)
def test_a_named_precision_is_kept(setting, policy):
    assert precision.choose(setting, cpu_flags=AVX2, gpus=[]).policy == policy


def test_cpu_info_reads_the_model_and_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(
        f"processor\t: 0\nmodel name\t: AMD EPYC 9R14\n"
        f"flags\t\t: {ZEN4}\n\nprocessor\t: 1\n"
        "model name\t: other\nflags\t\t: fpu\n"
    )
    model, flags = precision.cpu_info(str(path))
    assert model == "AMD EPYC 9R14"
    assert "avx512_bf16" in flags and "amx_bf16" not in flags
    assert precision.cpu_info(str(tmp_path / "none")) == ("", set())
