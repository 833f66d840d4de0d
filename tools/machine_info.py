"""The machine a benchmark ran on, for the line beside its figures."""

import os
import platform

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model_and_flags():
    """(CPU model name, its bfloat16-related flags), from /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    return model, [flag for flag in BF16_FLAGS if flag in flags]


def describe():
    model, flags = cpu_model_and_flags()
    return (f"{model}, {os.cpu_count()} CPUs, bfloat16 flags: "
            f"{', '.join(flags) or 'none'}")
