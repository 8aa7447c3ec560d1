"""Find-all on a labelled geo-mosaic: the rules of rshash.archive.findall measured.

The archive is one GeoTIFF scene built from UC Merced's query tiles (split 0 of
dmch_60_40: 40 tiles a class, 840 in all) by benchmarks/geo_mosaic.py, cut into chips as
an archive cuts a scene: the 840 aligned chips (one tile each) and the 783 offset ones
(half a tile in x and y: a quarter of four tiles each). A chip is relevant to a class when
the class covers at least half of it (geo_mosaic.relevant).

For each class, QUERIES aligned chips of the class (seeded) are each a search: the rule
scores every chip from the query alone, then a simulated person marks the top ``MARKS``
chips not yet marked of the current ranking relevant or not by their class, and the rule
scores again, for ``ROUNDS`` rounds. Two hash functions over the same EfficientNet-Lite0
features:

- the archive's unsupervised default: itq at 64 bits fitted on the archive's own chips;
- a trained cell: dmch at 64 bits trained on the train part of the same split (its train
  rows, stopped on its val rows, as rshash train does), the mosaic made of query tiles,
  so no archive tile was seen in training.

Metrics, per search, on the ranking find_all returns with no threshold (every chip but
the rejected ones; the marked relevant first, then by score):

- AP (find-all average precision): the mean, over the archive's relevant chips, of the
  precision at each one's rank (a relevant chip find_all does not return -- none here,
  since only rejected chips are dropped -- would count 0). It is what the person gets
  back, their marks included;
- residual AP: the same over the chips not marked yet (marked ones and the query left
  out): how well the rule generalises from the marks, without the credit of the marks;
- R@P90: the largest recall at a cut of the find-all ranking whose precision is >= 0.9
  (the recall of the best threshold a person could set at 90% precision; 0 when none);
- P / R at threshold: the precision and recall of what find_all returns at the rule's
  default threshold (findall.THRESHOLDS: 0.5 for the probes' probability, 0.75 for
  rocchio's share of agreeing bits), marked relevant chips included.

The probes' settings (L2, pseudo-negatives, a rejected chip's weight) were chosen with
--tune on an archive of the train part's tiles, never on this mosaic.

Averages are over classes (each class the mean of its searches). Features are cached
under --cache (default /tmp/findall-cache), never in the repository.

Usage: python benchmarks/findall.py [--queries 5] [--rounds 3] [--marks 10]
    [--rules rocchio probe_features probe_codes] [--archives aligned mixed]
    [--backbone efficientnet_lite0] [--scale 1000000] [--per-class] [--tune] [--cache DIR]

About 7 minutes on 2 cores with the features cached (dmch's training is 2-4 of them; the
first run extracts the features, about 3 minutes more for lite0).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import geo_mosaic  # noqa: E402  (a sibling script, imported as a module)

BACKBONE = "efficientnet_lite0"
BITS = 64
METRICS = ("AP", "residual AP", "R@P90", "P at threshold", "R at threshold")
# the probes' settings tried by --tune (on the train part): L2, pseudo-negatives, a
# rejected chip's weight against a pseudo-negative's
TUNE = ((0.3, 1.0, 3.0), (300, 2000), (1.0, 10.0, 50.0))


def embed_chips(chips: np.ndarray, backbone: str = BACKBONE, threads: int = 2, batch: int = 32):
    """Pooled features (n, D) float32 of uint8 chips (n, h, w, 3), through the scene job's
    path (rshash.features.embedder on pixels: preprocessed exactly as the same pixels
    read from a file)."""
    from rshash.features import embedder

    return embedder(backbone, threads, batch)(list(chips)).astype(np.float32)


def cached(cache: Path, name: str, key: str, make):
    """``make()`` saved as cache/name-<key>.npy, read back when present."""
    path = cache / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npy"
    if path.exists():
        return np.load(path)
    t = time.perf_counter()
    value = make()
    np.save(path, value)
    print(f"  ({name}: {len(value)} rows in {time.perf_counter() - t:.0f} s, cached)", flush=True)
    return value


def prepare(cache: Path, seed: int = 0, backbone: str = BACKBONE):
    """The mosaic of the query tiles, its chips' windows and features, and the train
    part's features, labels and roles (train / val), all cached."""
    from rshash.features import embed

    paths, classes = geo_mosaic.list_tiles(geo_mosaic.ucmd_root())
    role = geo_mosaic.split_roles(paths, classes, seed)
    q_paths, q_classes = geo_mosaic.split_tiles(paths, classes, "query", seed)
    t_keep = np.isin(role, ("train", "val"))
    t_paths = [p for p, k in zip(paths, t_keep) if k]
    tif = cache / f"query_mosaic_s{seed}.tif"
    if not geo_mosaic.labels_path(tif).exists():
        geo_mosaic.build_mosaic(q_paths, q_classes, tif, seed=seed)
    m = geo_mosaic.read_mosaic(tif)
    key = geo_mosaic.labels_path(tif).read_text() + backbone
    windows = {
        "aligned": geo_mosaic.chip_windows(m, 0),
        "offset": geo_mosaic.chip_windows(m, m.tile // 2),
    }
    feats = {
        kind: cached(
            cache,
            f"chips_{kind}",
            key + kind,
            lambda w=w: embed_chips(geo_mosaic.read_chips(tif, w), backbone),
        )
        for kind, w in windows.items()
    }
    X_train = cached(
        cache, "train_tiles", "\n".join(t_paths) + backbone, lambda: embed(t_paths, backbone, 2)
    )
    names = m.class_names
    y_train = np.array([names.index(c) for c, k in zip(classes, t_keep) if k], np.int64)
    return m, windows, feats, X_train, y_train, role[t_keep], tif


def fit_cells(archive_X: dict, X_train, y_train, train_role):
    """{archive: {cell: packed codes}}: itq fitted on each archive's own features, and
    dmch trained once on the train part (fit on its train rows, stopped on its val rows,
    as rshash's train_cell does), encoding every archive."""
    from threadpoolctl import threadpool_limits

    from rshash.methods import build
    from rshash.methods.convergence import Validation

    def pack(model, X):
        return np.packbits(model.encode(X).bits.astype(bool), axis=1)

    with threadpool_limits(limits=2):
        fit, val = train_role == "train", train_role == "val"
        t = time.perf_counter()
        dmch = build("dmch", BITS, seed=0, threads=2)
        validation = Validation(X_train[val], y_train[val])
        dmch.fit(X_train[fit], y_train[fit], validation=validation, log=lambda *_: None)
        print(f"  (dmch trained in {time.perf_counter() - t:.0f} s)", flush=True)
        cells = {}
        for arch, X in archive_X.items():
            itq = build("itq", BITS, seed=0).fit(X)
            cells[arch] = {"itq (archive's own)": pack(itq, X), "dmch (trained)": pack(dmch, X)}
    return cells


def ap_of(hits: np.ndarray, total: int) -> float:
    """Average precision of a ranked list of hits against ``total`` relevant items."""
    if total == 0:
        return np.nan
    ranks = np.flatnonzero(hits) + 1
    return float((np.arange(1, len(ranks) + 1) / ranks).sum() / total)


def recall_at_precision(hits: np.ndarray, total: int, precision: float = 0.9) -> float:
    """The largest recall at a cut of the ranking whose precision is >= ``precision``."""
    cum = np.cumsum(hits)
    ok = cum / np.arange(1, len(hits) + 1) >= precision - 1e-12
    return float(cum[ok].max() / total) if ok.any() and total else 0.0


def search_rounds(rule, codes, X, rel, query, rounds, marks, **kw):
    """[(AP, residual AP, R@P90, precision and recall at the rule's default threshold)]
    for the query alone and after each round of marks."""
    from rshash.archive.findall import THRESHOLDS, find_all, score

    relevant, rejected, out = [], [], []
    total = int(rel.sum())
    for r in range(rounds + 1):
        s = score(rule, codes, X, [query], relevant, rejected, **kw)
        yes = [query, *relevant]
        rows, _ = find_all(s, -np.inf, yes, rejected)
        marked = np.zeros(len(s), bool)
        marked[yes + rejected] = True
        free = rows[~marked[rows]]
        found, _ = find_all(s, THRESHOLDS[rule], yes, rejected)
        out.append(
            (
                ap_of(rel[rows], total),
                ap_of(rel[free], int(rel[free].sum())),
                recall_at_precision(rel[rows], total),
                rel[found].mean() if len(found) else np.nan,
                rel[found].sum() / total,
            )
        )
        if r < rounds:  # the person marks the top ``marks`` unmarked chips
            for row in free[:marks]:
                (relevant if rel[row] else rejected).append(int(row))
    return out


def study_one(rule, codes, X, fractions, n_aligned, queries, rounds, marks, kw=None, seed=0):
    """(n_classes, rounds + 1, 3) per-class means of ``queries`` searches a class, each
    from a seeded aligned chip of the class."""
    labels = fractions[:n_aligned].argmax(1)
    rng = np.random.default_rng(seed)
    out = []
    for c in range(fractions.shape[1]):
        rel = fractions[:, c] >= geo_mosaic.HALF
        picks = rng.choice(np.flatnonzero(labels == c), queries, replace=False)
        runs = [
            search_rounds(rule, codes, X, rel, int(q), rounds, marks, **(kw or {})) for q in picks
        ]
        out.append(np.mean(runs, 0))
    return np.array(out)


def study(archives, cells, X_of, rules, queries, rounds, marks):
    """{(archive, cell, rule): (n_classes, rounds + 1, 3) per-class means}."""
    results = {}
    for arch, (fractions, n_aligned) in archives.items():
        shared = {}
        for cell, codes in cells[arch].items():
            for rule in rules:
                t = time.perf_counter()
                if rule == "probe_features" and rule in shared:  # reads no codes: the same
                    results[arch, cell, rule] = shared[rule]
                    continue
                v = study_one(rule, codes, X_of[arch], fractions, n_aligned, queries, rounds, marks)
                results[arch, cell, rule] = shared[rule] = v
                print(f"  ({arch}, {cell}, {rule}: {time.perf_counter() - t:.0f} s)", flush=True)
    return results


def tune(X_train, y_train, grid, queries=2, rounds=3, marks=10):
    """AP after ``rounds`` rounds of each probe, for each (L2, pseudo-negatives), on an
    archive of the train part's tiles (their features are those of aligned chips) hashed
    by itq fitted on them: the probes' settings are chosen here, never on the query
    mosaic the study reports."""
    from rshash.methods import build

    codes = np.packbits(
        build("itq", BITS, seed=0).fit(X_train).encode(X_train).bits.astype(bool), 1
    )
    onehot = np.eye(y_train.max() + 1)[y_train]
    rows = []
    for rule in ("probe_features", "probe_codes"):
        for kw in grid:
            v = study_one(rule, codes, X_train, onehot, len(onehot), queries, rounds, marks, kw)
            rows.append((rule, kw, *np.nanmean(v, 0)[[0, rounds], 0]))
    return rows


def scale(n: int, cache: Path, dim: int = 1280, marks: int = 30, repeat: int = 3):
    """Seconds per find-all (score + find_all) over ``n`` synthetic chips, each rule, with
    a query and ``marks`` marked chips (3 rounds of 10): codes 64 bits in memory; features
    float32 (n, dim) memory-mapped from a .npy file already in the page cache."""
    from rshash.archive.findall import THRESHOLDS, find_all, score

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (n, BITS // 8), dtype=np.uint8)
    path = cache / f"scale_features_{n}x{dim}.npy"
    if not path.exists():
        out = np.lib.format.open_memmap(path, "w+", np.float32, (n, dim))
        for s in range(0, n, 1 << 16):
            out[s : s + (1 << 16)] = rng.random((min(1 << 16, n - s), dim), np.float32)
        out.flush()
        del out
    X = np.load(path, mmap_mode="r")
    for s in range(0, n, 1 << 16):  # into the page cache
        np.asarray(X[s : s + (1 << 16)]).sum()
    rel, rej = list(range(1, 1 + marks // 2)), list(range(100, 100 + marks // 2))
    times = {}
    for rule in ("rocchio", "probe_codes", "probe_features"):
        best = np.inf
        for _ in range(repeat):
            t = time.perf_counter()
            s = score(rule, codes, X, [0], rel, rej)
            find_all(s, THRESHOLDS[rule], [0, *rel], rej)
            best = min(best, time.perf_counter() - t)
        times[rule] = best
    return times


def table(results, archives, rules, rounds):
    lines = []
    head = ["archive", "hash", "rule", "metric", "query alone"] + [
        f"after {r}" for r in range(1, rounds + 1)
    ]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for (arch, cell, rule), v in results.items():
        mean = np.nanmean(v, 0)  # over classes
        for i, metric in enumerate(METRICS):
            vals = [f"{x:.3f}" for x in mean[:, i]]
            lines.append(f"| {arch} | {cell} | {rule} | {metric} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def goals(results, rules, rounds):
    """The issue's goals on the aligned chips: the trained cell's AP after the last round
    (goal >= 0.9); the default's AP after the last round over the query alone's, the
    rule's own and the plain Hamming search's (rocchio with no marks; goal >= 1.6x)."""
    itq, dmch = "itq (archive's own)", "dmch (trained)"
    plain = np.nanmean(results["aligned", itq, "rocchio"], 0)[0, 0]
    lines = [
        f"Goals, aligned chips, after {rounds} rounds (plain Hamming search, itq: AP {plain:.3f}):",
        "",
        "| rule | dmch AP (goal >= 0.9) | itq AP | itq / its query alone (goal >= 1.6) "
        "| itq / plain Hamming search |",
        "|---|---|---|---|---|",
    ]
    for rule in rules:
        d = np.nanmean(results["aligned", dmch, rule], 0)[rounds, 0]
        v = np.nanmean(results["aligned", itq, rule], 0)[:, 0]
        lines.append(
            f"| {rule} | {d:.3f} | {v[rounds]:.3f} | {v[rounds] / v[0]:.2f}x "
            f"| {v[rounds] / plain:.2f}x |"
        )
    return "\n".join(lines)


def class_table(results, names, key, rounds):
    v = results[key]
    head = (
        ["class"]
        + [f"AP r{r}" for r in range(rounds + 1)]
        + [f"R@P90 r{r}" for r in range(rounds + 1)]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, name in enumerate(names):
        lines.append(
            f"| {name} | " + " | ".join(f"{x:.2f}" for x in [*v[c, :, 0], *v[c, :, 2]]) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    from threadpoolctl import threadpool_limits

    from rshash.archive.findall import RULES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="/tmp/findall-cache")
    p.add_argument("--queries", type=int, default=5, help="query chips a class")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--marks", type=int, default=10, help="chips the person marks a round")
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument(
        "--archives", nargs="+", default=["aligned", "mixed"], choices=["aligned", "mixed"]
    )
    p.add_argument("--scale", type=int, default=1_000_000, help="chips to time (0: skip)")
    p.add_argument("--per-class", action="store_true", help="also print per-class tables")
    p.add_argument("--backbone", default=BACKBONE, help="the features' backbone")
    p.add_argument("--prepare-only", action="store_true")
    p.add_argument(
        "--tune",
        action="store_true",
        help="only choose the probes' L2 and pseudo-negatives, on the train part",
    )
    a = p.parse_args()
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/findall.py " + shlex.join(sys.argv[1:])
    m, windows, feats, X_train, y_train, train_role, tif = prepare(cache, backbone=a.backbone)
    if a.prepare_only:
        return
    if a.tune:
        threadpool_limits(limits=1)
        grid = [
            {"l2": l2, "pseudo": pseudo, "rejected": rejected}
            for l2, pseudo, rejected in itertools.product(*TUNE)
        ]
        print("| rule | L2 | pseudo-negatives | rejected weight | AP query alone | AP after 3 |")
        print("|---|---|---|---|---|---|")
        for rule, kw, ap0, ap3 in tune(X_train, y_train, grid):
            print(
                f"| {rule} | {' | '.join(map(str, kw.values()))} | {ap0:.3f} | {ap3:.3f} |",
                flush=True,
            )
        print(command)
        return
    fa = geo_mosaic.class_fractions(m, windows["aligned"])
    fo = geo_mosaic.class_fractions(m, windows["offset"])
    archives = {"aligned": (fa, len(fa)), "mixed": (np.concatenate([fa, fo]), len(fa))}
    X_of = {
        "aligned": feats["aligned"],
        "mixed": np.concatenate([feats["aligned"], feats["offset"]]),
    }
    archives = {k: archives[k] for k in a.archives}
    cells = fit_cells({k: X_of[k] for k in archives}, X_train, y_train, train_role)
    # the probes' fits are small: one BLAS thread each (two oversubscribe 2 shared cores,
    # 20x slower measured); the 1M-chip timing below runs with both
    limit = threadpool_limits(limits=1)
    results = study(archives, cells, X_of, a.rules, a.queries, a.rounds, a.marks)
    n_off = int((fo.max(1) >= geo_mosaic.HALF).sum())
    print()
    print(
        f"Find-all on a mosaic of UC Merced's {len(fa)} query tiles (split 0 of dmch_60_40), "
        f"{a.backbone} features, {BITS} bits; {a.queries} queries a class, {a.marks} marks a "
        f"round; aligned: the {len(fa)} aligned chips; mixed: those and the {len(fo)} "
        f"offset chips ({n_off} of them relevant to some class). Means over "
        f"{fa.shape[1]} classes."
    )
    print()
    print(table(results, archives, a.rules, a.rounds))
    if "aligned" in archives and "rocchio" in a.rules:
        print()
        print(goals(results, a.rules, a.rounds))
    if a.per_class:
        for key in results:
            print()
            print(f"Per class: {' / '.join(key)}")
            print(class_table(results, m.class_names, key, a.rounds))
    limit.unregister()
    if a.scale:
        times = scale(a.scale, cache)
        print()
        print(
            f"Find-all over {a.scale:,} synthetic chips ({BITS}-bit codes; 1280 float32 "
            "features memory-mapped, in the page cache), a query and 30 marks, best of 3:"
        )
        print()
        print("| rule | seconds |")
        print("|---|---|")
        for rule, t in times.items():
            print(f"| {rule} | {t:.2f} |")
    print()
    print(command)


if __name__ == "__main__":
    main()
