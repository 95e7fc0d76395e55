import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from diffpath.errors import ConfigError
from diffpath.scoring.metrics import aupr_in, aupr_out, auroc, fpr_at_tpr

ID = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.3, 0.5, 0.05, 0.6, 0.45])
OOD = np.array([0.9, 0.7, 0.3, 1.2, 0.85])


def test_auroc_and_aupr_agree_with_sklearn() -> None:
    labels = np.r_[np.zeros(len(ID)), np.ones(len(OOD))]
    scores = np.r_[ID, OOD]
    assert auroc(ID, OOD) == pytest.approx(roc_auc_score(labels, scores))
    assert aupr_out(ID, OOD) == pytest.approx(average_precision_score(labels, scores))
    assert aupr_in(ID, OOD) == pytest.approx(average_precision_score(1 - labels, -scores))


def test_fpr_at_95_by_hand() -> None:
    # 20 ID scores 1..20: keeping 95% (19 of 20) of ID puts the threshold at 19.
    id_scores = np.arange(1.0, 21.0)
    ood_scores = np.array([5.0, 19.0, 19.5, 30.0])  # 5 and 19 are accepted as ID -> 2 of 4
    assert fpr_at_tpr(id_scores, ood_scores, 0.95) == pytest.approx(0.5)
    assert fpr_at_tpr(id_scores, np.array([100.0]), 0.95) == 0.0


def test_empty_inputs_raise() -> None:
    with pytest.raises(ConfigError):
        auroc(np.array([]), OOD)


def test_auroc_interval_brackets_the_auroc_and_narrows_with_more_images() -> None:
    from diffpath.scoring.metrics import auroc_interval

    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 2000):
        id_s, ood_s = rng.normal(size=n), rng.normal(1, 1, n)
        low, high = auroc_interval(id_s, ood_s, n_boot=300)
        assert low < auroc(id_s, ood_s) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 4
