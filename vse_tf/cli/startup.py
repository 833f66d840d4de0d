"""TensorFlow imported without its native start-up lines.

TensorFlow's C++ libraries write 6 to 8 lines to stderr when they load and
first look for devices (oneDNN notes, CUDA probes, and on a CPU-only
machine `E0000 ... failed call to cuInit`), before any logging setting can
apply. The programs import TensorFlow here first, with file descriptor 2
pointed at a temporary file: the lines are dropped when the import works,
and printed when it fails. `--verbosity` on the command line, or
TF_CPP_MIN_LOG_LEVEL set by the user, keeps them.
"""

import os
import sys
import tempfile


def import_tensorflow_quietly():
    if "tensorflow" in sys.modules or _verbose():
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the device probes
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _verbose():
    import vse_tf

    return (
        any(arg.startswith(("--verbosity", "-v")) for arg in sys.argv)
        or vse_tf.USER_TF_CPP_MIN_LOG_LEVEL is not None
    )
