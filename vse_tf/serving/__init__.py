"""What a trained run serves: SavedModels for TF Serving, an image index
for search, and embeddings for TensorBoard's projector."""
