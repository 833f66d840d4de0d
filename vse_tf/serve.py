"""`python -m vse_tf.serve`: runs `vse_tf.cli.serve`."""

from vse_tf.cli import serve

if __name__ == "__main__":
    serve.run()
