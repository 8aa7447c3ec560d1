"""Training to convergence: the early-stopping loop on hand-computed score sequences, a
real method stopping early on an easy set (best state kept) and running to its maximum
on a hard one, the validation part of a split, what the model file and the cost
table record, and how a stop at the cap is recorded, warned about and marked."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from rshash import RshashError
from rshash.codes import read_codes
from rshash.data.splits import make_split, write_split
from rshash.digest import read_npz_header
from rshash.features import write_arrays
from rshash.methods import build, get_method, method_names
from rshash.methods.convergence import (
    ConvergenceParams,
    TrainingRecord,
    Validation,
    cap_warning,
    train_to_convergence,
    val_metric_name,
)

POLICY = ConvergenceParams(max_epochs=50, val_every=2, patience=3, grace=0)


def run_scripted(p, scores):
    """The loop on a scripted score per check; the state is the epoch it was taken at."""
    trained, restored = [], []
    it = iter(scores)
    record = train_to_convergence(
        p,
        trained.append,
        lambda: next(it),
        snapshot=lambda: trained[-1],
        restore=restored.append,
        metric="map_all",
    )
    return record, trained, restored


def test_stops_after_patience_checks_without_improvement_and_restores_the_best():
    # checks at epochs 2, 4, 6, 8, 10: best 0.5 at epoch 4, then 3 checks no better
    record, trained, restored = run_scripted(POLICY, [0.1, 0.5, 0.4, 0.5, 0.45, 0.9])
    assert trained == list(range(1, 11))
    assert restored == [4]
    assert (record.epochs_run, record.best_epoch, record.best_val) == (10, 4, 0.5)
    assert record.val_curve == [[2, 0.1], [4, 0.5], [6, 0.4], [8, 0.5], [10, 0.45]]


def test_an_improvement_resets_patience_and_min_delta_counts_small_gains_as_none():
    scores = [0.1, 0.5, 0.4, 0.45, 0.52, 0.51, 0.51, 0.51]
    record, _, restored = run_scripted(POLICY, scores)
    assert (record.epochs_run, record.best_epoch, restored) == (16, 10, [10])
    strict = ConvergenceParams(max_epochs=50, val_every=2, patience=3, min_delta=0.05, grace=0)
    record, _, restored = run_scripted(strict, scores)
    assert (record.epochs_run, record.best_epoch, restored) == (10, 4, [4])


def test_grace_waits_as_long_again_as_the_best_took():
    # best at epoch 10; patience alone would stop at 16, grace 1 waits until epoch 20
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.9]
    p = ConvergenceParams(max_epochs=50, val_every=2, patience=3, grace=1.0)
    record, _, restored = run_scripted(p, scores)
    assert (record.epochs_run, record.best_epoch, restored) == (20, 10, [10])
    record, _, _ = run_scripted(ConvergenceParams(**{**p.as_dict(), "grace": 0.5}), scores)
    assert record.epochs_run == 16


def test_the_last_epoch_is_checked_and_not_restored_when_best():
    p = ConvergenceParams(max_epochs=5, val_every=2, patience=3)
    record, trained, restored = run_scripted(p, [0.1, 0.2, 0.3])
    assert trained == [1, 2, 3, 4, 5] and restored == []
    assert record.val_curve == [[2, 0.1], [4, 0.2], [5, 0.3]] and record.best_epoch == 5


def test_without_a_validation_part_it_runs_epochs_at_most_max_epochs():
    def run(p):
        trained = []
        record = train_to_convergence(p, trained.append, None, lambda: None, lambda s: None)
        assert trained == list(range(1, record.epochs_run + 1))
        return record

    record = run(POLICY)  # epochs None: max_epochs
    assert (record.epochs_run, record.best_epoch, record.best_val) == (50, 50, None)
    assert (record.stopped, record.max_epochs, record.still_rising) == ("no_validation", 50, None)
    assert cap_warning(record, "x") is None
    assert run(ConvergenceParams(**{**POLICY.as_dict(), "epochs": 7})).epochs_run == 7
    assert run(ConvergenceParams(**{**POLICY.as_dict(), "epochs": 70})).epochs_run == 50
    # with a validation part, ``epochs`` is not a limit: the stop and max_epochs are
    p = ConvergenceParams(**{**POLICY.as_dict(), "epochs": 2})
    record, trained, _ = run_scripted(p, [0.1, 0.5, 0.4, 0.5, 0.45, 0.9])
    assert (record.epochs_run, record.stopped) == (10, "patience")


def test_the_record_says_how_training_stopped():
    # the stop fired (even on the last epoch): patience
    record, _, _ = run_scripted(POLICY, [0.1, 0.5, 0.4, 0.5, 0.45, 0.9])
    assert (record.stopped, record.max_epochs, record.still_rising) == ("patience", 50, None)
    last = ConvergenceParams(max_epochs=8, val_every=2, patience=3, grace=0)
    record, _, _ = run_scripted(last, [0.5, 0.4, 0.4, 0.4])
    assert (record.epochs_run, record.stopped) == (8, "patience")
    # at the cap with the best among the last `patience` checks: still rising
    p = ConvergenceParams(max_epochs=10, val_every=2, patience=3, grace=0)
    record, _, _ = run_scripted(p, [0.1, 0.2, 0.3, 0.35, 0.3])
    assert (record.epochs_run, record.best_epoch) == (10, 8)
    assert (record.stopped, record.max_epochs, record.still_rising) == ("cap", 10, True)
    assert record.header()["stopped"] == "cap" and record.header()["still_rising"] is True
    # at the cap, held there by grace after `patience` checks without a gain: not rising
    held = ConvergenceParams(max_epochs=10, val_every=1, patience=3, grace=1.5)
    record, _, _ = run_scripted(held, [0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert (record.best_epoch, record.stopped, record.still_rising) == (5, "cap", False)
    assert cap_warning(record, "x") is None


def test_the_cap_warning_names_the_cell_the_cap_and_the_last_scores():
    record = TrainingRecord(
        150,
        150,
        0.918,
        [[140, 0.9], [145, 0.912], [148, 0.915], [150, 0.918]],
        "map_all",
        stopped="cap",
        max_epochs=150,
        still_rising=True,
    )
    assert cap_warning(record, "dmch 32 bits split0") == (
        "warning: dmch 32 bits split0 stopped at its cap max_epochs=150 with val map_all "
        "still rising (0.912, 0.915, 0.918; best 0.918 at epoch 150): raise it with a "
        "variant's params: {max_epochs: ...}"
    )
    assert cap_warning(None, "itq 16 bits split0") is None


def test_val_metric_is_the_protocols_first_cutoff():
    assert val_metric_name("all") == "map_all" and val_metric_name(20) == "map_at_20"
    with pytest.raises(RshashError, match="map_all or map_at_K"):
        Validation(np.zeros((2, 3)), [0, 1], "p_at_5")


def split_in_two(X, y, every=5):
    val = np.arange(len(y)) % every == 0
    return (X[~val], y[~val]), (X[val], y[val])


def test_stops_early_on_an_easy_set_and_keeps_the_best_state(blobs):
    (X, y), (Xv, yv) = split_in_two(*blobs(n_classes=4, per_class=40, noise=0.3))
    params = {"max_epochs": 150, "val_every": 5, "patience": 3, "grace": 0, "refit": False}
    model = build("dpsh", 16, seed=3, **params).fit(X, y, validation=Validation(Xv, yv))
    rec = model.record
    assert rec.best_val == 1.0 and rec.best_epoch < rec.epochs_run < 150
    assert rec.epochs_run == rec.best_epoch + 3 * 5 and rec.refit_epochs is None
    assert len(rec.val_curve) == rec.epochs_run // 5
    # the kept state is the one at the best check: the same as training exactly that long
    exact = build("dpsh", 16, seed=3, **{**params, "max_epochs": rec.best_epoch}).fit(X, y)
    assert exact.record.epochs_run == rec.best_epoch
    for a, b in zip(model.encode(X).value, exact.encode(X).value):
        np.testing.assert_array_equal(a, b)
    assert Validation(Xv, yv).score(model, X, y) == rec.best_val


def test_refit_trains_on_fit_and_val_rows_for_the_best_epoch(blobs):
    (X, y), (Xv, yv) = split_in_two(*blobs(n_classes=4, per_class=40, noise=0.3))
    params = {"max_epochs": 150, "val_every": 5, "patience": 3, "grace": 0}
    stopped = build("dpsh", 16, seed=3, **params, refit=False)
    stopped.fit(X, y, validation=Validation(Xv, yv))
    model = build("dpsh", 16, seed=3, **params).fit(X, y, validation=Validation(Xv, yv))
    rec = model.record
    # the stop is the same; the model kept is a fresh fit on both parts for its best epoch
    assert rec.header() == {**stopped.record.header(), "refit_epochs": rec.best_epoch}
    both = build("dpsh", 16, seed=3, **{**params, "max_epochs": rec.best_epoch})
    both.fit(np.concatenate([X, Xv]), np.concatenate([y, yv]))
    assert both.record.epochs_run == rec.best_epoch
    np.testing.assert_array_equal(model.encode(X).value, both.encode(X).value)
    assert not np.array_equal(model.encode(X).value, stopped.encode(X).value)


def test_the_refit_runs_the_best_epoch_past_the_epochs_of_a_fit_without_validation(blobs):
    """``epochs`` (a paper's count, run when there is no validation part) does not cut
    the refit short: it runs the stop's best epoch."""
    (X, y), (Xv, yv) = split_in_two(*blobs(n_classes=4, per_class=40, noise=0.3))
    params = {"max_epochs": 150, "val_every": 1, "patience": 3, "grace": 0}
    model = build("dpsh", 16, seed=3, **params, epochs=1)
    model.fit(X, y, validation=Validation(Xv, yv))
    rec = model.record
    assert rec.best_epoch > 1 and rec.refit_epochs == rec.best_epoch
    both = build("dpsh", 16, seed=3, **{**params, "epochs": rec.best_epoch})
    both.fit(np.concatenate([X, Xv]), np.concatenate([y, yv]))
    assert both.record.epochs_run == rec.best_epoch
    np.testing.assert_array_equal(model.encode(X).value, both.encode(X).value)


def test_runs_to_its_maximum_on_a_hard_set(blobs):
    # overlapping classes: the validation score still rises at every check of 12 epochs
    (X, y), (Xv, yv) = split_in_two(*blobs(n_classes=4, per_class=60, noise=1.5))
    params = {"max_epochs": 12, "val_every": 1, "patience": 3}
    model = build("dpsh", 16, seed=0, **params).fit(X, y, validation=Validation(Xv, yv))
    rec = model.record
    assert rec.epochs_run == rec.best_epoch == 12
    curve = np.array(rec.val_curve)[:, 1]
    assert len(curve) == 12 and rec.best_val == curve[-1] > curve[0] + 0.2


@pytest.mark.parametrize("name", [n for n in method_names() if get_method(n).trained()])
def test_every_trained_method_declares_one_policy_and_its_maximum(name):
    p = get_method(name).Params()
    assert isinstance(p, ConvergenceParams)
    # the cap lets the stop fire after a best epoch of up to 3/4 of it (a cap within
    # patience x val_every of the start can never let patience end training)
    assert p.max_epochs >= 4 * p.patience * p.val_every
    # without a validation part: the paper's count, within the cap
    assert p.epochs is None or 0 < p.epochs <= p.max_epochs
    # milan restates grace (its slow, noisy curve: methods/milan.py), as each its maximum
    grace = 0.5 if name == "milan" else 0.0
    assert (p.val_every, p.patience, p.min_delta, p.grace, p.refit) == (5, 10, 0.0, grace, True)
    with pytest.raises(RshashError, match="max_epochs"):
        build(name, 16, max_epochs=-1)


@pytest.mark.parametrize("name", ["lsh", "itq", "sh", "pcah", "ksh", "raw"])
def test_closed_form_methods_take_no_validation_part(name):
    assert not get_method(name).trained()
    with pytest.raises(RshashError, match="closed form"):
        build(name, 0 if name == "raw" else 16).fit(
            np.zeros((4, 3)), [0, 0, 1, 1], validation=Validation(np.zeros((2, 3)), [0, 1])
        )


def manifest(n_classes=3, per_class=20):
    label = np.repeat(np.arange(n_classes), per_class)
    ids = [f"c{c}/img{i:02d}" for c, i in zip(label, np.tile(np.arange(per_class), n_classes))]
    return pd.DataFrame({"image_id": ids, "label": label, "class_name": [f"c{c}" for c in label]})


def test_the_validation_part_moves_neither_the_train_part_nor_queries_nor_database():
    protocol = {"train_fraction": 0.6, "database": "train"}
    plain = make_split(manifest(), {**protocol, "val_fraction": 0.0}, seed=4)
    split = make_split(manifest(), protocol, seed=4)  # the default: 20% of the train part
    part = split[split.role.isin(["train", "val"])]
    assert part.image_id.tolist() == plain[plain.role == "train"].image_id.tolist()
    assert (split.role == "val").sum() == 3 * 2 and (split.role == "train").sum() == 3 * 10
    for role in ("query", "database"):
        a, b = split[split.role == role], plain[plain.role == role]
        assert a.image_id.tolist() == b.image_id.tolist()
        assert a.db_order.tolist() == b.db_order.tolist()


@pytest.fixture
def cell(tmp_path, blobs):
    X, y = blobs(n_classes=4, per_class=30, noise=0.3)
    m = manifest(4, 30)
    write_arrays(tmp_path / "f.h5", m.image_id, y, {"features": X}, {"backbone": "x"})
    write_split(make_split(m, {"train_fraction": 0.6}, seed=0), tmp_path / "s.parquet")
    return tmp_path


def rshash(*args, cwd):
    """The CLI as a command, from this interpreter (CI does not activate the venv)."""
    argv = [sys.executable, "-m", "rshash.cli", *map(str, args)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True)


def test_the_model_file_log_and_codes_record_the_training(cell):
    params = json.dumps({"max_epochs": 60, "patience": 2, "grace": 0})
    common = ["--features", "f.h5", "--split", "s.parquet", "--bits", 16, "--seed", 0]
    run = rshash(
        "train",
        *common,
        "--method",
        "csq",
        "--params",
        params,
        "--val-metric",
        "map_at_20",
        "--model",
        "m.npz",
        "--codes",
        "c.parquet",
        cwd=cell,
    )
    assert run.returncode == 0, run.stderr
    header = read_npz_header(cell / "m.npz", "model file")
    assert header["val_metric"] == "map_at_20"
    assert header["epochs_run"] == header["best_epoch"] + 2 * 5 < 60
    assert (header["stopped"], header["max_epochs"], header["still_rising"]) == (
        "patience",
        60,
        None,
    )
    assert "warning" not in run.stdout + run.stderr
    assert header["best_val"] == max(s for _, s in header["val_curve"])
    assert f"kept epoch {header['best_epoch']}" in run.stdout
    # refitted on the train and val rows (72 of 120) for the best epoch's epochs
    assert header["refit_epochs"] == header["best_epoch"]
    assert f"refit on 72 rows (fit + val) for {header['best_epoch']} epochs" in run.stdout
    assert sum(line.startswith("epoch ") for line in run.stdout.splitlines()) == len(
        header["val_curve"]
    )
    # the database is the whole train part: validation rows are encoded as well
    codes = read_codes(cell / "c.parquet")
    assert set(codes.role) == {"train", "val", "query", "database"}
    # a closed-form method fits on train and val rows and records no epochs
    run = rshash(
        "train", *common, "--method", "itq", "--model", "i.npz", "--codes", "i.parquet", cwd=cell
    )
    assert run.returncode == 0, run.stderr
    assert "epochs_run" not in read_npz_header(cell / "i.npz", "model file")
    assert "stopped" not in read_npz_header(cell / "i.npz", "model file")
    assert "on 72 images" in run.stdout  # 60% of 120: train and val rows
    plot = rshash("plot-val", "--out", "v.png", "m.npz", cwd=cell)
    assert plot.returncode == 0 and (cell / "v.png").stat().st_size > 10_000
    plot = rshash("plot-val", "--out", "w.png", "i.npz", cwd=cell)
    assert plot.returncode == 2 and "no validation curve" in plot.stderr
    assert not (cell / "w.png").exists()


def test_a_split_without_val_rows_runs_the_methods_epochs(cell):
    """val_fraction 0: nothing can stop training, so it runs the method's ``epochs``
    (csq's paper count, 90, here set to 7), not its cap, and says so."""
    split = make_split(manifest(4, 30), {"train_fraction": 0.6, "val_fraction": 0}, seed=0)
    write_split(split, cell / "s0.parquet")
    run = rshash(
        "train",
        *["--features", "f.h5", "--split", "s0.parquet", "--bits", 16, "--seed", 0],
        *["--method", "csq", "--params", json.dumps({"epochs": 7})],
        *["--model", "m.npz", "--codes", "c.parquet"],
        cwd=cell,
    )
    assert run.returncode == 0, run.stderr
    assert "s0.parquet: no val rows, so no early stopping: training runs 7 epochs" in run.stdout
    header = read_npz_header(cell / "m.npz", "model file")
    assert (header["epochs_run"], header["stopped"], header["refit_epochs"]) == (
        7,
        "no_validation",
        None,
    )
    assert get_method("csq").Params().epochs == 90


def test_a_cell_stopped_at_its_cap_says_so_in_its_header_and_log(cell):
    # 4 epochs, checked at each: patience 10 cannot fire, the best is among the last checks
    params = json.dumps({"max_epochs": 4, "val_every": 1})
    run = rshash(
        "train",
        *["--features", "f.h5", "--split", "s.parquet", "--bits", 16, "--seed", 0],
        *["--method", "csq", "--params", params, "--model", "m.npz", "--codes", "c.parquet"],
        cwd=cell,
    )
    assert run.returncode == 0, run.stderr
    header = read_npz_header(cell / "m.npz", "model file")
    assert (header["stopped"], header["max_epochs"], header["still_rising"]) == ("cap", 4, True)
    assert header["epochs_run"] == 4
    (warning,) = [line for line in run.stdout.splitlines() if line.startswith("warning")]
    scores = ", ".join(f"{s:.3f}" for _, s in header["val_curve"][-3:])
    assert warning == (
        "warning: csq 16 bits s (m.npz) stopped at its cap max_epochs=4 with val map_all "
        f"still rising ({scores}; best {header['best_val']:.3f} at epoch "
        f"{header['best_epoch']}): raise it with a variant's params: {{max_epochs: ...}}"
    )


def test_select_scores_the_stopped_model_on_its_validation_part(tmp_path, blobs):
    # rshash select scores settings on a validation part: the model scored is the one the
    # stop kept, not its refit (which would have fitted those very rows)
    from rshash.data.splits import read_split, train_part
    from rshash.features import read_features
    from rshash.selection import grid_search, train_validation

    X, y = blobs(n_classes=4, per_class=60, noise=1.5)  # overlapping: val mAP below 1
    m = manifest(4, 60)
    write_arrays(tmp_path / "f.h5", m.image_id, y, {"features": X}, {"backbone": "x"})
    write_split(make_split(m, {"train_fraction": 0.6}, seed=0), tmp_path / "s.parquet")
    base = {"max_epochs": 40, "patience": 2}
    ((params, result, _),) = grid_search(
        tmp_path / "f.h5", tmp_path / "s.parquet", "dpsh", 16, base, {}
    )
    feats, split = read_features(tmp_path / "f.h5"), read_split(tmp_path / "s.parquet")
    index = {k: i for i, k in enumerate(feats.image_id)}
    rows = split[train_part(split)].image_id.map(index).to_numpy()
    X, y = feats.features[rows], feats.label[rows]
    fit, val = train_validation(y, 0.2, 0)
    stopped = build("dpsh", 16, seed=0, **base, refit=False)
    stopped.fit(X[fit], y[fit], validation=Validation(X[val], y[val]))
    assert params == base and result["map_all"] == stopped.record.best_val


@pytest.mark.slow
def test_the_pipeline_marks_and_warns_about_a_cell_stopped_at_its_cap(
    repo, tmp_path, snakemake, small_experiment
):
    """A tiny experiment through snakemake (about a minute): milan capped at 10 epochs
    (its patience of 10 checks cannot fire) is marked in the markdown, warned about in
    its training log and counted in the cost table; csq stopped by a patience of 1 is
    not; the CSV table keeps its columns."""
    import yaml

    from rshash.report.tables import COLUMNS

    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["datasets"]["demo"]["synthetic"].update(per_class=12, size=64)
    cfg["variants"]["milan_cap"] = {"method": "milan", "params": {"max_epochs": 10}}
    stop = {"max_epochs": 200, "patience": 1, "val_every": 1}
    cfg["variants"]["csq_stop"] = {"method": "csq", "params": stop}
    cfg["experiments"] = {
        "tiny": {**small_experiment("demo", ["itq", "milan_cap", "csq_stop"]), "plots": []}
    }
    cfg["targets"] = ["tiny"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(repo, tmp_path, "results/tables/tiny.md", "results/tables/tiny_cost.csv")
    results = tmp_path / "results"
    cell = "demo/efficientnet_lite0/dmch_60_40/{}/16/split0"
    capped = read_npz_header(results / f"models/{cell.format('milan_cap')}.npz", "model file")
    assert (capped["stopped"], capped["max_epochs"], capped["still_rising"]) == ("cap", 10, True)
    stopped = read_npz_header(results / f"models/{cell.format('csq_stop')}.npz", "model file")
    assert stopped["stopped"] == "patience" and stopped["epochs_run"] < 200

    text = (results / "tables/tiny.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.count("|") == 3}
    assert rows["milan_cap"].rstrip(" |").endswith("†")
    assert "†" not in rows["csq_stop"] and "†" not in rows["itq"]
    assert "milan_cap 16 bits (max_epochs=10; 1 of 1 splits" in text
    meta = json.loads((results / "tables/tiny.meta.json").read_text())
    assert [c["method"] for c in meta["stopped_at_cap"]["cells"]] == ["milan_cap"]
    assert list(pd.read_csv(results / "tables/tiny.csv").columns) == COLUMNS

    log = (results / f"logs/train_method/{cell.format('milan_cap')}.log").read_text()
    (warning,) = [line for line in log.splitlines() if line.startswith("warning:")]
    assert "milan 16 bits split0" in warning and "milan_cap" in warning
    assert "stopped at its cap max_epochs=10 with val map_all still rising" in warning
    log = (results / f"logs/train_method/{cell.format('csq_stop')}.log").read_text()
    assert "warning" not in log

    cost = pd.read_csv(results / "tables/tiny_cost.csv")
    train = cost[cost.stage == "train"].set_index("method")
    assert train.loc["milan_cap", "n_stopped_cap"] == 1
    assert train.loc["csq_stop", "n_stopped_cap"] == 0
    assert pd.isna(train.loc["itq", "n_stopped_cap"])
