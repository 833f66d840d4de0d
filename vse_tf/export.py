"""`python -m vse_tf.export`: runs `vse_tf.cli.export`."""

from vse_tf.cli import export

if __name__ == "__main__":
    export.run()
