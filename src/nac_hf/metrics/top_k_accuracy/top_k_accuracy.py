"""Top-k accuracy as an `evaluate` metric that ships with nac_hf, so that it loads from a local path with no network:

    evaluate.load(nac_hf.training.TOP_K_ACCURACY)
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """
Top-k accuracy: the fraction of examples whose reference label is among the k highest-scoring labels.
With k = 1 it is the ordinary accuracy.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one row of label scores (logits or probabilities) per example.
    references (`list` of `int`): the true label of each example.
    k (`int`, defaults to 1): how many of the highest-scoring labels count as a hit; at most the number of labels.

Returns:
    `top_{k}_accuracy` (`float`): the fraction of examples whose label is among their k best-scoring labels.

Example:
    >>> metric = evaluate.load(path)
    >>> metric.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], references=[2, 0], k=2)
    {'top_2_accuracy': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=1):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references, dtype=np.int64)
        if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected predictions of shape (examples, labels) with one row per reference, got {scores.shape} "
                f"for {labels.shape[0]} references"
            )
        if not 1 <= k <= scores.shape[1]:
            raise ValueError(f"k must lie in [1, {scores.shape[1]}] (the number of labels), got {k}")
        if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
            raise ValueError(f"references must be label ids in [0, {scores.shape[1]}), got {labels.min()}..{labels.max()}")
        # The k best labels per row; ties are broken towards the lower label id, as argmax does for k = 1.
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        hits = (best == labels[:, None]).any(axis=1)
        return {f"top_{k}_accuracy": float(hits.mean()) if hits.size else 0.0}
