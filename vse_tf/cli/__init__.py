"""The programs, one module per `python -m vse_tf.<verb>`.

Flags and gin loading live here and nowhere else: the library below
(`vse_tf.training`, `vse_tf.serving`, `vse_tf.evaluation`, `vse_tf.models`,
`vse_tf.data`) never imports this package.
"""

from vse_tf.cli import startup

startup.import_tensorflow_quietly()
