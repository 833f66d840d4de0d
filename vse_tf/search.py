"""`python -m vse_tf.search`: runs `vse_tf.cli.search`."""

from vse_tf.cli import search

if __name__ == "__main__":
    search.run()
