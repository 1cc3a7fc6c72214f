"""The chest-film finding classifier: labels from metadata, per-source probabilities, AUROC, and the shipped model."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import mannwhitneyu

from meddiff.data.samples import samples_dir
from meddiff.downstream.cxr import (ADULT, CLS_CXR_FILE, CXR_CLASSES, PEDIATRIC, ChestFilmClassifier, classifier_input,
                                    label_of, read_films, source_probabilities, within_source_labels)
from meddiff.downstream.metrics import auroc, macro_auroc
from meddiff.errors import InputError
from meddiff.metrics.generation import percentile_scale

HEADER = "file,source_dataset,patient_id,split,finding\n"


def test_labels_of_both_sources():
    assert label_of(ADULT, "No Finding") == 0
    assert label_of(ADULT, "Atelectasis|Pneumonia") == 1
    assert [label_of(PEDIATRIC, f) for f in ("Normal", "Pneumonia (bacteria)", "Pneumonia (virus)")] == [2, 3, 4]
    with pytest.raises(InputError, match="'Effusion'"):
        label_of(ADULT, "Effusion")  # neither normal nor pneumonia: refused, not guessed
    with pytest.raises(InputError, match="Kermany finding 'COVID'"):
        label_of(PEDIATRIC, "COVID")


def test_read_films_keeps_one_split_and_names_a_bad_line(tmp_path):
    (tmp_path / "metadata.csv").write_text(HEADER + "b.png,NIH ChestX-ray14,nih-1,test,Pneumonia\n"
                                           "a.png,Kermany pediatric CXR,kermany-2,test,Pneumonia (virus)\n"
                                           "c.png,NIH ChestX-ray14,nih-3,train,No Finding\n")
    films = read_films(tmp_path, "test")
    assert [(f.path.name, f.source, f.label) for f in films] == [("a.png", PEDIATRIC, 4), ("b.png", ADULT, 1)]
    (tmp_path / "metadata.csv").write_text(HEADER + "a.png,JSRT,j-1,test,Normal\n")
    with pytest.raises(InputError, match=r"metadata.csv, line 2 \(a.png\): source_dataset 'JSRT'"):
        read_films(tmp_path)
    (tmp_path / "metadata.csv").write_text("file,split\na.png,test\n")
    with pytest.raises(InputError, match="lacks columns source_dataset, patient_id, finding"):
        read_films(tmp_path)


def test_source_probabilities_are_a_softmax_over_that_source_only():
    logits = torch.tensor([[0.0, 1.0, 50.0, -50.0, 3.0]])
    p = source_probabilities(logits, ADULT)
    assert torch.allclose(p, torch.softmax(torch.tensor([[0.0, 1.0]], dtype=torch.float64), 1))  # 50 of a child class ignored
    q = source_probabilities(logits, PEDIATRIC)
    assert q.shape == (1, 3) and q.argmax().item() == 0 and abs(q.sum().item() - 1) < 1e-12
    assert within_source_labels([2, 4, 3], PEDIATRIC).tolist() == [0, 2, 1]
    with pytest.raises(InputError, match="not classes of adult"):
        within_source_labels([0, 3], ADULT)


def test_classifier_input_averages_2x2_blocks():
    x = torch.arange(16.0).reshape(1, 4, 4) / 16
    y = classifier_input(x, 2)
    assert y.shape == (1, 1, 2, 2)
    assert torch.allclose(y[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]) / 16)
    with pytest.raises(InputError, match="square films"):
        classifier_input(torch.zeros(1, 4, 6))


def test_auroc_is_the_mann_whitney_probability():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5  # ties count one half
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=200).round(1), rng.random(200) < 0.3  # rounding makes ties
    u = mannwhitneyu(s[y], s[~y]).statistic
    assert auroc(s, y) == pytest.approx(u / (y.sum() * (~y).sum()), abs=1e-12)
    with pytest.raises(InputError, match="needs positives and negatives"):
        auroc([0.1, 0.2], [1, 1])


def test_macro_auroc_averages_one_vs_rest():
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    y = np.array([0, 1, 2, 0])
    assert macro_auroc(p, y) == 1.0
    two = np.array([[0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
    assert macro_auroc(two, [0, 1, 0]) == auroc(two[:, 1], np.array([0, 1, 0]) == 1)


def _sample_films():
    import csv
    folder = samples_dir("cxr_films")
    rows = list(csv.DictReader(open(folder / "films.csv", newline="")))
    x = np.stack([percentile_scale(np.asarray(Image.open(folder / r["file"]).convert("L"), np.float32)) for r in rows])
    labels = [label_of(ADULT if r["source"].startswith("NIH") else PEDIATRIC, r["finding"]) for r in rows]
    return classifier_input(x), labels


def test_shipped_classifier_reads_the_held_out_sample_films():
    """The four shipped films are of test patients (films.csv; never trained on): adult normal and pneumonia,
    pediatric normal and bacterial. Chance is 1/2 (adult) and 1/3 (pediatric) per film."""
    assert CLS_CXR_FILE.stat().st_size < 2e6
    clf = ChestFilmClassifier.load()
    assert clf.class_names == CXR_CLASSES and clf.recipe["input_size"] == 128
    x, labels = _sample_films()
    assert labels == [0, 1, 2, 3]
    logits = clf(x)
    assert logits.shape == (4, 5) and logits.dtype == torch.float32
    assert logits.argmax(1).tolist() == labels  # the five-way argmax names source and finding (measured: all four)
    for i, lab in enumerate(labels):
        source = ADULT if lab < 2 else PEDIATRIC
        p = clf.probabilities(x[i:i + 1], source)[0]
        k = int(within_source_labels([lab], source)[0])
        assert p[k] > 0.6, (i, p)  # measured 0.80, 0.91, 1.00, 0.83
