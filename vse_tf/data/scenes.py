"""Procedural scenes of coloured shapes and captions written about them.

A scene holds 1 to 4 objects, each a colour, a shape and a size at a free
position. Its five captions are written in five styles that differ, as human
captions do, in wording and in what they mention: every object, a spatial
relation, the count, the colours, or only some of the objects. No single
caption style names everything, so retrieval has to learn the parts.
"""

import dataclasses

import numpy as np

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 220, 50),
    "purple": (150, 60, 200),
    "cyan": (60, 210, 220),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SIZES = ("small", "large")
CAPTIONS_PER_IMAGE = 5

_SHAPE_WORDS = {
    "circle": ("circle", "ball", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
}
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_COUNT_WORDS = ("zero", "one", "two", "three", "four")
_OBJECT_WORDS = ("shapes", "objects", "things")


@dataclasses.dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    x: float  # centre, in pixels from the left
    y: float  # centre, in pixels from the top
    radius: float


def sample_scene(rng, image_size=64, max_objects=4):
    """Objects at free positions that do not overlap."""
    count = int(rng.integers(1, max_objects + 1))
    objects = []
    while len(objects) < count:
        size = SIZES[rng.integers(len(SIZES))]
        radius = image_size * (0.08 if size == "small" else 0.15)
        radius *= rng.uniform(0.9, 1.1)
        x, y = rng.uniform(radius + 1, image_size - radius - 1, size=2)
        if all(
            np.hypot(x - o.x, y - o.y) > radius + o.radius + 2 for o in objects
        ):
            objects.append(
                SceneObject(
                    colour=list(COLOURS)[rng.integers(len(COLOURS))],
                    shape=SHAPES[rng.integers(len(SHAPES))],
                    size=size,
                    x=float(x),
                    y=float(y),
                    radius=float(radius),
                )
            )
    return objects


def _shape_mask(obj, xs, ys):
    dx, dy = xs - obj.x, ys - obj.y
    r = obj.radius
    if obj.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if obj.shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if obj.shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if obj.shape == "triangle":  # apex up, base below the centre
        return (dy >= -r) & (dy <= 0.7 * r) & (np.abs(dx) <= (dy + r) / 1.7)
    if obj.shape == "cross":
        bar = 0.35 * r
        return ((np.abs(dx) <= bar) & (np.abs(dy) <= r)) | (
            (np.abs(dy) <= bar) & (np.abs(dx) <= r)
        )
    raise ValueError(f"Unknown shape {obj.shape!r}.")


def render_scene(objects, rng, image_size=64):
    """uint8 [image_size, image_size, 3] on a dark, slightly noisy ground."""
    ys, xs = np.mgrid[0:image_size, 0:image_size].astype(np.float32) + 0.5
    background = rng.integers(10, 50, size=3)
    image = np.broadcast_to(background, (image_size, image_size, 3)).astype(
        np.float32
    )
    image = image + rng.normal(0, 4, size=image.shape)
    for obj in objects:
        colour = np.asarray(COLOURS[obj.colour]) + rng.integers(-15, 16, 3)
        image[_shape_mask(obj, xs, ys)] = colour
    return np.clip(image, 0, 255).astype(np.uint8)


# ---- captions ------------------------------------------------------------


def _pick(rng, words):
    return words[rng.integers(len(words))]


def _noun_phrase(obj, rng, with_size=None, article=None):
    words = [article or _pick(rng, ("a", "a", "one"))]
    if with_size if with_size is not None else rng.random() < 0.5:
        words.append(_pick(rng, _SIZE_WORDS[obj.size]))
    words += [obj.colour, _pick(rng, _SHAPE_WORDS[obj.shape])]
    return " ".join(words)


def _count_phrase(count, rng):
    noun = _pick(rng, _OBJECT_WORDS)
    return f"{_COUNT_WORDS[count]} {noun if count > 1 else noun[:-1]}"


def _join(phrases):
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def relation(a, b):
    """Where a lies relative to b, along the axis where they differ most."""
    dx, dy = b.x - a.x, b.y - a.y
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def _place(obj, image_size):
    third = image_size / 3
    column = ("left", "middle", "right")[min(int(obj.x // third), 2)]
    row = ("top", "middle", "bottom")[min(int(obj.y // third), 2)]
    if row == column == "middle":
        return "in the middle"
    if row == "middle":
        return f"on the {column}"
    if column == "middle":
        return f"at the {row}"
    return f"in the {row} {column} corner"


def _caption_every_object(objects, rng, image_size):
    del image_size
    intro = _pick(
        rng,
        (
            "",
            "a picture of ",
            "an image with ",
            "there is ",
            f"{_count_phrase(len(objects), rng)}: ",
        ),
    )
    return intro + _join([_noun_phrase(o, rng) for o in objects])


def _caption_relation(objects, rng, image_size):
    if len(objects) == 1:
        return (
            f"{_noun_phrase(objects[0], rng)} {_place(objects[0], image_size)}"
        )
    i, j = rng.choice(len(objects), size=2, replace=False)
    a, b = objects[i], objects[j]
    verb = _pick(rng, (" ", " is ", " sits "))
    subject = _noun_phrase(a, rng)
    return f"{subject}{verb}{relation(a, b)} {_noun_phrase(b, rng)}"


def _caption_count(objects, rng, image_size):
    del image_size
    if len(objects) == 1:
        return _noun_phrase(objects[0], rng, article="a single")
    obj = objects[rng.integers(len(objects))]
    count = _count_phrase(len(objects), rng)
    link = _pick(rng, (", one of them is ", " including ", " with "))
    return f"{count}{link}{_noun_phrase(obj, rng)}"


def _caption_colours(objects, rng, image_size):
    del image_size
    # Sorted before the shuffle: a set's order follows str hashes, which
    # differ from process to process (PYTHONHASHSEED), and the data must not.
    colours = sorted(
        sorted({o.colour for o in objects}), key=lambda _: rng.random()
    )
    if rng.random() < 0.5:
        return _join([f"something {c}" for c in colours])
    noun = _pick(rng, _OBJECT_WORDS) if len(objects) > 1 else "shape"
    return f"{_join(colours)} {noun} on a dark background"


def _caption_some_objects(objects, rng, image_size):
    del image_size
    size = int(rng.integers(1, max(len(objects) - 1, 1) + 1))
    chosen = rng.choice(len(objects), size=size, replace=False)
    phrases = [_noun_phrase(objects[i], rng, with_size=True) for i in chosen]
    if size < len(objects):
        return _join(phrases) + " among other shapes"
    return _pick(rng, ("just ", "only ")) + _join(phrases)


CAPTION_STYLES = (
    _caption_every_object,
    _caption_relation,
    _caption_count,
    _caption_colours,
    _caption_some_objects,
)


def describe_scene(objects, rng, image_size=64):
    """Five captions, one per style, in a random order."""
    order = rng.permutation(len(CAPTION_STYLES))
    return [CAPTION_STYLES[i](objects, rng, image_size) for i in order]


def make_example(seed, split_index, index, image_size=64):
    """One (image, captions) pair, a pure function of its arguments."""
    rng = np.random.default_rng([seed, split_index, index])
    objects = sample_scene(rng, image_size)
    image = render_scene(objects, rng, image_size)
    return image, describe_scene(objects, rng, image_size), objects
