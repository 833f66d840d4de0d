"""A dual encoder from its gin configuration, with its optimizer: what
training builds and what loading a trained model rebuilds."""
