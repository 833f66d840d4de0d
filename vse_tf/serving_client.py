"""`python -m vse_tf.serving_client`: runs `vse_tf.cli.serving_client`."""

from vse_tf.cli import serving_client

if __name__ == "__main__":
    serving_client.run()
