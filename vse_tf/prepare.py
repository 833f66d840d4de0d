"""`python -m vse_tf.prepare`: runs `vse_tf.cli.prepare`."""

from vse_tf.cli import prepare

if __name__ == "__main__":
    prepare.run()
