"""BERT's WordPiece tokenizer with core TensorFlow ops only.

keras-hub's `BertTokenizer` splits and normalizes text with TensorFlow Text
ops (`RegexSplitWithOffsets`, `CaseFoldUTF8`, `NormalizeUTF8`,
`FastWordpieceTokenizeWithOffsets`), which the stock TF Serving build links
only in a pinned, older version, or not at all. `WordPieceTokenizer` gives
the same token ids with ops every TensorFlow runtime has:

1. Each character is mapped by a table (NFD with the accent marks removed,
   where the tokenizer strips accents), as TF Text's `normalize_utf8`
   would map it; the table is built once from TF Text itself, over every
   Unicode code point, so it follows the ICU that keras-hub's tokenizer
   uses.
2. The same RE2 patterns as keras-hub split words on white space, control
   and format characters and keep punctuation and CJK ideographs as words
   of their own; `tf.strings.regex_replace` marks the boundaries.
3. Each character is case-folded by a second table (`case_fold_utf8`,
   which is NFKC_Casefold).
4. Greedy longest-match-first WordPiece, a `tf.while_loop` over pieces:
   at each step every unfinished word looks up all its candidate pieces at
   once; a word that cannot be covered, or is longer than 100 bytes,
   is one [UNK].

Characters are mapped one at a time, while NFKC composes across them. A
precomposed character keeps its composition (a Hangul syllable, a
two-part Indic vowel sign stay whole), but with case folding on, text
typed already decomposed (a letter and a separate combining accent,
conjoining Hangul jamo) is composed by TF Text and not here. Such text is
rare in captions, and MiniLM's vocabulary has no accented letters, so
both give [UNK] there; tests/test_wordpiece.py checks id-for-id equality
on the 40,000 Flickr8k captions and on a hand-made set of accents, CJK,
Hangul, Indic scripts, emoji, punctuation runs, long words and empty
strings, for every setting of lowercase, strip_accents and split_on_cjk.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

# keras-hub's word_piece_tokenizer.py patterns, in RE2 syntax.
WHITESPACE = r"\s|\p{Cc}|\p{Cf}"
PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]"
CJK = "|".join(
    f"[\\x{{{first}}}-\\x{{{last}}}]"
    for first, last in (
        ("4E00", "9FFF"),
        ("3400", "4DBF"),
        ("20000", "2A6DF"),
        ("2A700", "2B73F"),
        ("2B740", "2B81F"),
        ("2B820", "2CEAF"),
        ("F900", "FAFF"),
        ("2F800", "2FA1F"),
    )
)
# TF Text's FastWordpieceTokenizer maps longer words to the unknown token.
MAX_BYTES_PER_WORD = 100
# Marks word boundaries between steps 2 and 4: a control character, so no
# word keeps one, and never the outcome of case folding.
BOUNDARY = "\x1f"
# No valid UTF-8 string is this byte: a table's "not mapped".
UNMAPPED = b"\xff"


@functools.lru_cache(maxsize=None)
def character_tables(lowercase, strip_accents):
    """({char: normalized}, {char: folded}): TF Text's mapping of each
    code point it changes, for steps 1 and 3."""
    import tensorflow_text as tf_text

    chars = np.array(
        [
            chr(point).encode("utf-8")
            for point in range(0x110000)
            if not 0xD800 <= point <= 0xDFFF
        ],
        dtype=object,
    )
    normalized = chars
    if strip_accents:
        normalized = tf.strings.regex_replace(
            tf_text.normalize_utf8(chars, "NFD"), r"\p{Mn}", ""
        ).numpy()
    if not lowercase:
        folded = {}
    else:
        folded_chars = tf_text.case_fold_utf8(chars).numpy()
        folded = {c: f for c, f in zip(chars, folded_chars) if c != f}
        if strip_accents:
            # Where NFKC composes a character's own decomposition back (a
            # Hangul syllable, some vowel signs), keep it whole and fold
            # its decomposition as a whole.
            whole = tf_text.case_fold_utf8(normalized).numpy()
            for i, (c, n, w) in enumerate(zip(chars, normalized, whole)):
                pieces = (p.encode("utf-8") for p in n.decode("utf-8"))
                if b"".join(folded.get(p, p) for p in pieces) != w:
                    normalized[i] = c
                    folded[c] = w
    return (
        {c: n for c, n in zip(chars, normalized) if c != n},
        folded,
    )


def _string_table(mapping):
    """A lookup table of a non-empty {char: string}; UNMAPPED elsewhere."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(mapping.keys()), tf.string),
            tf.constant(list(mapping.values()), tf.string),
        ),
        default_value=UNMAPPED,
    )


def _map_characters(text, table):
    """Each character of `text` [N] replaced by table's string for it."""
    chars = tf.strings.unicode_split(text, "UTF-8", errors="replace")
    mapped = table.lookup(chars.flat_values)
    mapped = tf.where(mapped == UNMAPPED, chars.flat_values, mapped)
    return tf.strings.reduce_join(chars.with_flat_values(mapped), axis=-1)


@keras.saving.register_keras_serializable(package="vse_tf")
class WordPieceTokenizer(keras.layers.Layer):
    """Strings [N] -> WordPiece token ids, ragged [N, None] int32, as
    keras-hub's `WordPieceTokenizer` with the same settings gives them.

    Args:
      vocabulary: the tokens, in id order.
      lowercase: case-fold (NFKC_Casefold) each word.
      strip_accents: remove accent marks (NFD, then no `\\p{Mn}`).
      split_on_cjk: CJK ideographs are words of their own.
      suffix_indicator: the prefix of a piece that continues a word.
      oov_token: the token of a word that cannot be covered.
    """

    def __init__(
        self,
        vocabulary,
        lowercase=False,
        strip_accents=False,
        split_on_cjk=True,
        suffix_indicator="##",
        oov_token="[UNK]",
        **kwargs,
    ):
        super().__init__(trainable=False, **kwargs)
        self.vocabulary = list(vocabulary)
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.split_on_cjk = split_on_cjk
        self.suffix_indicator = suffix_indicator
        self.oov_token = oov_token
        self.oov_id = self.vocabulary.index(oov_token)
        self.longest_piece = max(
            len(token.removeprefix(suffix_indicator))
            for token in self.vocabulary
        )
        normalized, folded = character_tables(lowercase, strip_accents)
        self._normalized = _string_table(normalized) if normalized else None
        self._folded = _string_table(folded) if folded else None
        self._ids = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.vocabulary),
                tf.range(len(self.vocabulary), dtype=tf.int32),
            ),
            default_value=-1,
        )
        kept = f"{PUNCTUATION}|{CJK}" if split_on_cjk else PUNCTUATION
        self._kept_pattern = kept
        self._boundary_pattern = f"{WHITESPACE}|{kept}"

    @classmethod
    def like(cls, tokenizer, **kwargs):
        """The core-op twin of a keras-hub `WordPieceTokenizer`."""
        if tokenizer.special_tokens_in_strings or not tokenizer.split:
            raise ValueError(
                "Only keras-hub WordPiece tokenizers that split their input "
                "and treat special tokens in strings as text have a core-op "
                "twin."
            )
        return cls(
            tokenizer.get_vocabulary(),
            lowercase=tokenizer.lowercase,
            strip_accents=tokenizer.strip_accents,
            split_on_cjk=tokenizer.split_on_cjk,
            suffix_indicator=tokenizer.suffix_indicator,
            oov_token=tokenizer.oov_token,
            **kwargs,
        )

    def token_id(self, token):
        return self.vocabulary.index(token)

    def words(self, text):
        """Strings [N] -> their words, ragged [N, None]: steps 1 to 3."""
        text = tf.convert_to_tensor(text, tf.string)
        # TF Text's regex_split reads a string up to its first NUL.
        text = tf.strings.regex_replace(text, r"\x00(?s:.*)", "")
        if self._normalized is not None:
            text = _map_characters(text, self._normalized)
        # Kept delimiters become words; the others vanish (RE2's leftmost
        # match over single characters, as TF Text's regex_split).
        text = tf.strings.regex_replace(
            text, self._kept_pattern, BOUNDARY + r"\0" + BOUNDARY
        )
        text = tf.strings.regex_replace(text, WHITESPACE, BOUNDARY)
        if self._folded is not None:
            text = _map_characters(text, self._folded)
        words = tf.strings.split(text, sep=BOUNDARY)
        return tf.ragged.boolean_mask(words, words != "")

    def call(self, text):
        words = self.words(text)
        pieces = self.wordpiece(words.flat_values)
        return tf.RaggedTensor.from_row_splits(
            pieces, words.row_splits, validate=False
        ).merge_dims(1, 2)

    def wordpiece(self, words):
        """Words [W] -> their piece ids, ragged [W, None] (step 4)."""
        lengths = tf.strings.length(words, unit="UTF8_CHAR")
        too_long = tf.strings.length(words) > MAX_BYTES_PER_WORD
        sizes = tf.range(1, self.longest_piece + 1)

        def unfinished(start, unknown):
            return (start < lengths) & ~unknown

        def step(index, start, unknown, pieces):
            active = unfinished(start, unknown)
            size, piece = self._longest_piece(words, lengths, start, sizes)
            unknown |= active & (size == 0)
            piece = tf.where(active & (size > 0), piece, -1)
            return index + 1, start + size, unknown, pieces.write(index, piece)

        _, _, unknown, pieces = tf.while_loop(
            lambda index, start, unknown, pieces: tf.reduce_any(
                unfinished(start, unknown)
            ),
            step,
            (
                0,
                tf.zeros_like(lengths),
                too_long,
                tf.TensorArray(
                    tf.int32, size=0, dynamic_size=True, element_shape=[None]
                ),
            ),
        )
        ids = tf.reshape(tf.transpose(pieces.stack()), [tf.size(words), -1])
        # A word that cannot be covered is [UNK] alone.
        ids = tf.concat(
            [
                tf.where(unknown, self.oov_id, -1)[:, None],
                tf.where(unknown[:, None], -1, ids),
            ],
            axis=1,
        )
        return tf.ragged.boolean_mask(ids, ids >= 0)

    def _longest_piece(self, words, lengths, start, sizes):
        """(size in characters, id) of the longest vocabulary piece at
        `start` of each word; size 0 where none is."""
        shape = [tf.size(words), self.longest_piece]
        candidates = tf.strings.substr(
            tf.broadcast_to(words[:, None], shape),
            tf.broadcast_to(start[:, None], shape),
            tf.broadcast_to(sizes[None, :], shape),
            unit="UTF8_CHAR",
        )
        candidates = tf.where(
            start[:, None] > 0, self.suffix_indicator + candidates, candidates
        )
        ids = self._ids.lookup(candidates)
        ends = start[:, None] + sizes[None, :]
        fits = (ids >= 0) & (ends <= lengths[:, None])
        size = tf.reduce_max(tf.where(fits, sizes[None, :], 0), axis=1)
        index = tf.maximum(size - 1, 0)
        return size, tf.gather(ids, index, batch_dims=1)

    def compute_output_spec(self, text):
        return keras.KerasTensor((text.shape[0], None), "int32", ragged=True)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary=self.vocabulary,
            lowercase=self.lowercase,
            strip_accents=self.strip_accents,
            split_on_cjk=self.split_on_cjk,
            suffix_indicator=self.suffix_indicator,
            oov_token=self.oov_token,
        )
        return config
