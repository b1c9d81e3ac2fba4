"""The model checks, from the side of what would leave: each refusal names the check and the
evidence; a sound model passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from bedside.errors import ReleaseError
from bedside.kernel._model_checks import TrainingData
from bedside.kernel.release import run_checks, serialise
from bedside.policy.release import ReleaseRules


def checks(obj, cohort, *, rules=None, find=None, train=True):
    rules = rules or ReleaseRules().for_kind("model")
    data = TrainingData.from_args(
        (cohort.x_train, cohort.y_train) if train else None, (cohort.x_test, cohort.y_test)
    )
    artifact = serialise(obj, name="m", kind="model")
    return {c.name: c for c in run_checks(obj, artifact, rules, data, find_identifier=find)}


def refusals(results):
    return {name: c.evidence for name, c in results.items() if not c.passed}


def train_net(x, y, *, hidden=16, epochs=150, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
    )
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net


def test_sound_torch_model_passes(cohort):
    net = train_net(cohort.x_train, cohort.y_train)
    assert refusals(checks(net, cohort)) == {}


def test_sound_logistic_regression_passes(cohort):
    model = LogisticRegression().fit(cohort.x_train, cohort.y_train)
    assert refusals(checks(model, cohort)) == {}


@pytest.mark.parametrize("model", [KNeighborsClassifier(), SVC()])
def test_instance_based_models_are_refused(cohort, model):
    model.fit(cohort.x_train, cohort.y_train)
    refused = refusals(checks(model, cohort))
    assert "instance_based" in refused
    assert ("_fit_X" in refused["instance_based"]) or (
        "support_vectors_" in refused["instance_based"]
    )


def test_instance_based_model_inside_a_pipeline_is_refused(cohort):
    model = make_pipeline(StandardScaler(), KNeighborsClassifier())
    model.fit(cohort.x_train, cohort.y_train)
    assert "_fit_X" in refusals(checks(model, cohort))["instance_based"]


def test_torch_buffer_holding_training_rows_is_refused_by_value(cohort):
    net = train_net(cohort.x_train, cohort.y_train)
    # 37 rows: no dimension equals the training-set size, so only the values give it away.
    net.register_buffer("seen", torch.tensor(cohort.x_train[:37]).clone())
    refused = refusals(checks(net, cohort))
    assert "37 rows equal to training records" in refused["training_rows"]
    assert "'seen'" in refused["training_rows"]


def test_torch_buffer_shaped_like_the_training_set_is_refused(cohort):
    net = train_net(cohort.x_train, cohort.y_train)
    net.register_buffer("per_patient", torch.zeros(len(cohort.x_train), 3))
    refused = refusals(checks(net, cohort))
    assert (
        f"equals the number of training records ({len(cohort.x_train)})" in refused["record_shaped"]
    )


def test_deep_tree_with_tiny_leaves_is_refused(cohort):
    tree = DecisionTreeClassifier(random_state=0).fit(cohort.x_train, cohort.y_train)
    refused = refusals(checks(tree, cohort))
    assert "fewer than 10 training records (smallest 1" in refused["min_leaf_size"]


def test_tree_with_large_leaves_passes_the_leaf_check(cohort):
    tree = DecisionTreeClassifier(min_samples_leaf=25, max_depth=3, random_state=0)
    tree.fit(cohort.x_train, cohort.y_train)
    assert checks(tree, cohort)["min_leaf_size"].passed


def test_overfit_model_fails_membership_inference(cohort):
    # Noisy labels and a wide network trained to zero loss on 100 records: it can only memorise.
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(len(cohort.y_train)) < 0.3, 1 - cohort.y_train, cohort.y_train)
    net = train_net(cohort.x_train[:100], noisy[:100], hidden=128, epochs=300)
    data = TrainingData.from_args(
        (cohort.x_train[:100], noisy[:100]), (cohort.x_test, cohort.y_test)
    )
    artifact = serialise(net, name="m", kind="model")
    results = {c.name: c for c in run_checks(net, artifact, ReleaseRules().for_kind("model"), data)}
    mia = results["membership_inference"]
    assert not mia.passed
    assert mia.details["auc"] > 0.6
    assert "loss-threshold attack AUC" in mia.evidence


def test_membership_inference_needs_held_out_records(cohort):
    net = train_net(cohort.x_train, cohort.y_train)
    refused = refusals(checks(net, cohort, train=False))
    assert "train=(X_train, y_train)" in refused["membership_inference"]


def test_oversized_artifact_is_refused(cohort):
    net = train_net(cohort.x_train, cohort.y_train, hidden=512, epochs=1)
    rules = ReleaseRules.from_dict({"model": {"max_bytes": "4 KB"}}).for_kind("model")
    refused = refusals(checks(net, cohort, rules=rules))
    assert "over the policy cap of 4000" in refused["max_bytes"]


def test_vocabulary_with_identifier_values_is_refused(cohort):
    mrns = set(cohort.frame["mrn"].str.lower())
    enc = OneHotEncoder(handle_unknown="ignore").fit(cohort.frame[["mrn"]].iloc[:50])
    model = make_pipeline(enc, LogisticRegression())
    model.fit(cohort.frame[["mrn"]].iloc[:50], cohort.frame["diabetes"].iloc[:50])
    results = checks(model, cohort, find=lambda s: s if s.lower() in mrns else None, train=False)
    evidence = results["vocabulary"].evidence
    assert not results["vocabulary"].passed
    assert "50 of 50 values" in evidence
    # The evidence counts identifier values; it never repeats them.
    assert not any(m.lower() in evidence.lower() for m in mrns)


def test_torch_vocabulary_attribute_is_scanned(cohort):
    net = train_net(cohort.x_train, cohort.y_train)
    net.vocab = {m: i for i, m in enumerate(cohort.frame["mrn"].iloc[:5])}
    mrns = set(cohort.frame["mrn"])
    refused = refusals(checks(net, cohort, find=lambda s: s if s in mrns else None))
    assert "vocab holds 5 of 5" in refused["vocabulary"]


def test_pickle_only_objects_are_not_released():
    with pytest.raises(ReleaseError, match="never pickles"):
        serialise(object(), name="m", kind="model")


def test_safetensors_round_trip_keeps_weights_and_architecture(cohort):
    import json

    from safetensors.torch import load

    net = train_net(cohort.x_train, cohort.y_train, epochs=5)
    artifact = serialise(net, name="risk", kind="model")
    assert artifact.filename == "risk.safetensors"
    tensors = load(artifact.data)
    assert torch.equal(tensors["0.weight"], net.state_dict()["0.weight"])
    header_len = int.from_bytes(artifact.data[:8], "little")
    meta = json.loads(artifact.data[8 : 8 + header_len])["__metadata__"]
    arch = json.loads(meta["bedside.architecture"])
    assert arch["class"] == "torch.nn.modules.container.Sequential"
    assert [m["type"] for m in arch["modules"]][1:] == ["Linear", "ReLU", "Linear"]


def test_skops_round_trip_loads_with_trusted_types_only(cohort):
    import skops.io

    model = LogisticRegression().fit(cohort.x_train, cohort.y_train)
    artifact = serialise(model, name="lr", kind="model")
    assert skops.io.get_untrusted_types(data=artifact.data) == []
    loaded = skops.io.loads(artifact.data)
    np.testing.assert_array_equal(loaded.predict(cohort.x_test), model.predict(cohort.x_test))


def test_training_rows_hidden_inside_a_weight_matrix_are_found(cohort):
    """Rows copied into a larger weight at an offset that is not a multiple of the row width."""
    net = train_net(cohort.x_train, cohort.y_train, hidden=16)
    with torch.no_grad():
        flat = net[0].weight.view(-1)  # 16 x 4 = 64 values
        flat[5 : 5 + 12] = torch.tensor(cohort.x_train[10:13].ravel())
    refused = refusals(checks(net, cohort))
    assert "3 rows equal to training records" in refused["training_rows"]
