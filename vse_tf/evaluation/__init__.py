"""Scoring a joint embedding space.

    metrics     Recall@K and rsum under the field's protocols (ties counted
                against the truth)
    embedding   a split through a model's towers, then scored
    hubness     the inverted-softmax correction of hub embeddings

The metrics are this package's own API: `vse_tf.evaluation.retrieval_metrics`.
"""

from vse_tf.evaluation.metrics import METRIC_NAMES  # noqa: F401
from vse_tf.evaluation.metrics import PROTOCOLS  # noqa: F401
from vse_tf.evaluation.metrics import RECALL_AT  # noqa: F401
from vse_tf.evaluation.metrics import TIE_TOLERANCE  # noqa: F401
from vse_tf.evaluation.metrics import TRUTH_ROWS  # noqa: F401
from vse_tf.evaluation.metrics import NonFiniteEmbeddings  # noqa: F401
from vse_tf.evaluation.metrics import Protocol  # noqa: F401
from vse_tf.evaluation.metrics import check_finite  # noqa: F401
from vse_tf.evaluation.metrics import check_protocol  # noqa: F401
from vse_tf.evaluation.metrics import format_paper_row  # noqa: F401
from vse_tf.evaluation.metrics import format_table  # noqa: F401
from vse_tf.evaluation.metrics import metrics_from_ranks  # noqa: F401
from vse_tf.evaluation.metrics import retrieval_metrics  # noqa: F401
from vse_tf.evaluation.metrics import retrieval_ranks  # noqa: F401
