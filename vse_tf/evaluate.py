"""`python -m vse_tf.evaluate`: runs `vse_tf.cli.evaluate`."""

from vse_tf.cli import evaluate

if __name__ == "__main__":
    evaluate.run()
