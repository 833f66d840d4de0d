"""`python -m vse_tf.train`: runs `vse_tf.cli.train`."""

from vse_tf.cli import train

if __name__ == "__main__":
    train.run()
