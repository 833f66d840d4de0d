"""`python -m vse_tf.projector`: runs `vse_tf.cli.projector`."""

from vse_tf.cli import projector

if __name__ == "__main__":
    projector.run()
