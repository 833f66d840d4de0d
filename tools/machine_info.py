"""The machine a benchmark ran on, for the line beside its figures."""

import os
import platform

from vse_tf.training import precision

# The flags of bfloat16 arithmetic, and AMX's tiles beside them.
BF16_FLAGS = (*precision.CPU_BF16_FLAGS, "amx_tile")


def cpu_model_and_flags():
    """(CPU model name, its bfloat16-related flags), from /proc/cpuinfo."""
    model, flags = precision.cpu_info()
    return (
        model or platform.processor() or platform.machine(),
        [flag for flag in BF16_FLAGS if flag in flags],
    )


def describe():
    model, flags = cpu_model_and_flags()
    return (
        f"{model}, {os.cpu_count()} CPUs, bfloat16 flags: "
        f"{', '.join(flags) or 'none'}"
    )


if __name__ == "__main__":
    print(describe())
