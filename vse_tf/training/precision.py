"""Which arithmetic a run computes in: `train.mixed_precision = 'auto'`.

bfloat16 halves the bytes of every activation, and where the hardware has
bfloat16 units it multiplies about twice as fast (a 2-core Xeon with
AMX-BF16: the precomputed-feature step 511 -> 173 ms; an EPYC with
AVX512-BF16: 479 -> 258 ms). Where it has none, TensorFlow emulates it and
float32 is faster (an EPYC with AVX2 only: the steps 1.2 to 4x slower in
bfloat16). So 'auto' picks bfloat16 only where the hardware computes it:

- NVIDIA GPUs of compute capability 8.0 or more (Ampere, Hopper, ...);
- CPUs whose flags include `amx_bf16` or `avx512_bf16` (read from
  /proc/cpuinfo);

and float32 elsewhere. Variables, embeddings and losses stay float32 under
either (the towers' last layers and the losses are float32).
"""

import contextlib
import dataclasses

# The CPU flags of bfloat16 arithmetic: Intel AMX tiles (Sapphire Rapids
# on), and AVX-512's bfloat16 dot products (Cooper Lake, AMD Zen 4 on).
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
GPU_BF16_COMPUTE_CAPABILITY = (8, 0)
CHOICES = (None, "auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class Choice:
    policy: str  # a Keras dtype policy name
    reason: str  # one sentence for the run's log


def cpu_info(path="/proc/cpuinfo"):
    """(model name, set of flags) of the first CPU in `path`; ("", empty)
    where there is no such file (macOS, Windows)."""
    model, flags = "", set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def gpu_compute_capabilities():
    """[(name, (major, minor))] of the GPUs TensorFlow sees."""
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        found.append(
            (
                details.get("device_name", gpu.name),
                tuple(details.get("compute_capability", (0, 0))),
            )
        )
    return found


def choose(setting, cpu_flags=None, gpus=None):
    """The `Choice` for `train.mixed_precision = setting`.

    `cpu_flags` (a set, or the flags line of /proc/cpuinfo as a string) and
    `gpus` ([(name, (major, minor))]) describe the machine; None reads this
    one's.
    """
    if setting != "auto":
        policy = setting or "float32"
        return Choice(policy, "as train.mixed_precision names it")
    if gpus is None:
        gpus = gpu_compute_capabilities()
    if gpus:
        older = [
            (name, cc) for name, cc in gpus if cc < GPU_BF16_COMPUTE_CAPABILITY
        ]
        name, capability = (older or gpus)[0]
        shown = ".".join(map(str, capability))
        if older:
            return Choice(
                "float32",
                f"'auto': float32, since {name} "
                f"(compute capability {shown}) has no bfloat16 "
                "units (8.0 or more has)",
            )
        return Choice(
            "mixed_bfloat16",
            f"'auto': bfloat16, since {name} "
            f"(compute capability {shown}) computes it",
        )
    if cpu_flags is None:
        cpu_flags = cpu_info()[1]
    if isinstance(cpu_flags, str):
        cpu_flags = set(cpu_flags.split())
    found = [flag for flag in CPU_BF16_FLAGS if flag in cpu_flags]
    if found:
        return Choice(
            "mixed_bfloat16",
            f"'auto': bfloat16, since the CPU computes it: {', '.join(found)}",
        )
    return Choice(
        "float32",
        "'auto': float32, since the CPU has no "
        f"bfloat16 arithmetic (no {' or '.join(CPU_BF16_FLAGS)} "
        "flag), where bfloat16 would be emulated and slower",
    )


@contextlib.contextmanager
def policy(name):
    """Keras's global dtype policy `name` for the models built inside."""
    import keras  # here: the tools that read the CPU flags need no Keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
