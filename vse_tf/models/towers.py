"""The tower type: one modality's encoder, with its parts as attributes.

    input -> [tokenizer] -> [backbone] -> head -> L2-normalized embedding

A `Tower` is a functional Keras model over those parts, so it saves,
exports and summarizes as one; the parts are held by name of role, not
found by a layer's name:

    tokenizer         strings -> token ids (string ops, run on the host);
                      None for towers that take pixels or features, or
                      whose backbone tokenizes itself
    backbone          the pretrained part whose features a run may cache
                      (`train.cache_features`); None for towers trained
                      from scratch
    head              what maps the backbone's features (or the token ids,
                      or the input) to the embedding; a tower without a
                      backbone is all head
    fine_tuned        layers of pretrained weights inside the head (the
                      last stages of a network), which fine-tuning treats
                      as backbones
    projection_heads  how many projection heads the embedding joins (the
                      losses' `projection_heads` must agree)
"""

import keras


@keras.saving.register_keras_serializable(package="vse_tf")
class Tower(keras.Model):
    """A functional model from `inputs` to `outputs` with named parts.

    Args:
      inputs, outputs: the functional graph, which calls the parts.
      tokenizer, backbone, head: parts of the graph (see the module
        docstring); `head` None is the whole tower.
      fine_tuned: layers inside the head that hold pretrained weights.
      projection_heads: heads the embedding joins.
    """

    def __init__(
        self,
        inputs,
        outputs,
        name=None,
        *,
        tokenizer=None,
        backbone=None,
        head=None,
        fine_tuned=(),
        projection_heads=1,
        **kwargs,
    ):
        if tokenizer is not None and (backbone is not None or head is None):
            raise ValueError(
                "A tower with a tokenizer has a head (from "
                "token ids) and no backbone."
            )
        super().__init__(inputs, outputs, name=name, **kwargs)
        # Layers of the graph already: Keras tracks each once, whatever
        # attributes name it.
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.head = head
        self.fine_tuned = tuple(fine_tuned)
        self.projection_heads = projection_heads

    def encoder(self):
        """The tower from token ids: its head after a tokenizer, else the
        whole tower. Numeric only, so XLA can compile it.

        A method, not a property: Keras's weight loading visits every
        attribute that is a layer, and one that is the tower itself would
        never end."""
        return self if self.tokenizer is None else self.head

    def get_config(self):
        # The functional graph, plus each part by its layer's name in it.
        return {
            **super().get_config(),
            "parts": {
                part: getattr(self, part).name
                for part in ("tokenizer", "backbone", "head")
                if getattr(self, part) is not None
            },
            "fine_tuned": [layer.name for layer in self.fine_tuned],
            "projection_heads": self.projection_heads,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        parts = config.pop("parts", {})
        fine_tuned = config.pop("fine_tuned", [])
        projection_heads = config.pop("projection_heads", 1)
        graph = keras.Model.from_config(config, custom_objects)
        layers = {layer.name: layer for layer in graph.layers}
        return cls(
            graph.inputs,
            graph.outputs,
            name=graph.name,
            **{part: layers[name] for part, name in parts.items()},
            fine_tuned=[_find(graph, name) for name in fine_tuned],
            projection_heads=projection_heads,
        )


def walk_layers(layer):
    """Every layer inside `layer` (not itself), depth first, through the
    public `layers` of the models it holds."""
    for inner in getattr(layer, "layers", ()):
        yield inner
        yield from walk_layers(inner)


def _find(model, name):
    return next(layer for layer in walk_layers(model) if layer.name == name)
