"""Find-all: score every chip of an archive from the chips a person marked, and return
all those at or above a threshold, ranked.

A search answers "the k nearest"; find-all answers "all of them": every field, every
storage tank of a scene. Its input is what a person gave through rounds of feedback (a
query chip, chips marked relevant, chips marked not relevant: rows of the archive), its
output every chip a rule scores at least ``threshold``. The rules share one signature,

    score(codes, features, query_rows, relevant_rows, not_relevant_rows) -> float64 [n]

(``codes``: packed (n, bits/8) uint8; ``features``: the stored real-valued (n, D)
float32 features, possibly memory-mapped, or None), higher meaning more like the marks,
and are registered by name in :data:`RULES`:

- ``rocchio``: Rocchio's rule on the codes, as a search's feedback ranks
  (:func:`rshash.archive.query.feedback_score`), rescaled to ``1 - weighted mean Hamming
  distance / bits``: a chip at distance d from the query and every marked code scores
  1 - d/bits, so a threshold t means "within (1 - t) bits of the marks on the weighted
  vote" (0.75: within a quarter of the bits). Needs no fit; one pass per marked code.
- ``probe_codes``: an L2-regularised logistic regression on the codes as +-1 vectors;
  the score is a probability.
- ``probe_features``: the same on the stored real-valued features (standardised on the
  sample it is fitted on); a probability.

A probe needs negatives from the first round, when the person has given a query and
nothing else, so it takes ``PSEUDO`` unmarked chips, drawn uniformly with a fixed seed
(so a find-all is reproducible), as pseudo-negatives: in an archive a class is a small
share of the chips (a twentieth in the UC Merced mosaic, much less in a real scene), so
nearly all of them are true negatives, and the few that are not are label noise the L2
penalty absorbs. The positives (query and relevant chips) and the negatives (rejected
chips and pseudo-negatives) weigh half the loss each, so 0.5 is the balanced boundary:
the default probability threshold; a rejected chip weighs ``REJECTED`` pseudo-negatives
(it is a sure negative, and a hard one: the person saw it near the top).
benchmarks/findall.py measures the rules.

The probes are scikit-learn's logistic regression (weighted, L2), checked against a
plain Newton fit of the same loss in the tests.

Numpy, numba, scipy and scikit-learn (no torch, no rasterio); :func:`merge_footprints`
imports shapely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from rshash import RshashError
from rshash.archive.query import ALPHA, BETA, GAMMA, feedback_score
from rshash.hamming import hamming_distances

# The probes' settings, chosen by benchmarks/findall.py --tune on the train part of UC
# Merced (never on the mosaic it reports): AP after 3 rounds moved by about 0.01 over
# L2 0.3..3 and 300 or 2000 pseudo-negatives, and rose by 0.02-0.03 when a rejected chip
# (a hard negative the person saw near the top) outweighs a random unmarked one.
PSEUDO = 300  # pseudo-negatives a probe draws from the unmarked chips
SEED = 0  # their seed: the same marks give the same find-all
L2 = 1.0  # the probes' L2 penalty on a loss of total weight 1 (see _fit_logistic)
REJECTED = 50.0  # a rejected chip's weight against a pseudo-negative's
CHUNK = 1 << 16  # rows of features scored at a time (a memory-mapped matrix is read once)
THRESHOLDS = {"rocchio": 0.75, "probe_codes": 0.5, "probe_features": 0.5}


def _rows(rows, n: int, what: str) -> np.ndarray:
    """Marked rows as sorted unique int64, each in 0..n-1; RshashError naming ``what``."""
    rows = np.asarray(() if rows is None else rows).ravel()
    if not len(rows):
        return np.zeros(0, np.int64)
    if not np.issubdtype(rows.dtype, np.integer):
        raise RshashError(f"{what}: integer rows expected, got {rows.dtype}")
    bad = rows[(rows < 0) | (rows >= n)]
    if len(bad):
        raise RshashError(f"{what}: row {bad[0]} out of range (the archive holds {n} chips)")
    return np.unique(rows.astype(np.int64))


def _marks(n: int, query_rows, relevant_rows, not_relevant_rows):
    """(query, relevant, not relevant) rows, checked: in range, a chip marked both ways
    refused, and at least one query or relevant chip."""
    q = _rows(query_rows, n, "query_rows")
    r = _rows(relevant_rows, n, "relevant_rows")
    nr = _rows(not_relevant_rows, n, "not_relevant_rows")
    both = np.intersect1d(np.union1d(q, r), nr)
    if len(both):
        raise RshashError(f"not_relevant_rows: row {both[0]} is also the query or marked relevant")
    if not len(q) and not len(r):
        raise RshashError("query_rows: find-all needs a query or a chip marked relevant")
    return q, r, nr


def _codes(codes) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2 or not codes.shape[1]:
        raise RshashError(
            f"codes: packed (n, bits/8) uint8 expected, got {codes.dtype} {codes.shape}"
        )
    return codes


def rocchio(codes, features, query_rows, relevant_rows=(), not_relevant_rows=(), threads=1):
    """Rocchio's score of every chip, ``1 - feedback_score / (W bits)`` with W the sum of
    the weights in play (ALPHA, + BETA with relevant marks, - GAMMA with rejections): the
    same order as a search's feedback, on a scale of bits (see the module). Several query
    rows count as one query, their mean distance; with no query row the relevant chips'
    mean stands in for it. ``features`` is not read."""
    codes = _codes(codes)
    n, bits = len(codes), 8 * codes.shape[1]
    q, r, nr = _marks(n, query_rows, relevant_rows, not_relevant_rows)
    dist = hamming_distances(codes[np.concatenate([q, r, nr])], codes, threads)
    query = dist[: len(q)] if len(q) else dist[len(q) : len(q) + len(r)]
    d = np.concatenate([query.mean(0, keepdims=True), dist[len(q) :]])
    weight = ALPHA + (BETA if len(r) else 0.0) - (GAMMA if len(nr) else 0.0)
    return 1.0 - feedback_score(d, len(r), len(nr)) / (weight * bits)


def _training_rows(n: int, q, r, nr, pseudo: int, seed: int, rejected: float = 1.0):
    """(rows, +1 / -1, weights) a probe fits on: query and relevant chips positive,
    rejected chips and ``pseudo`` unmarked chips (uniform, seeded) negative; each side
    weighs half of a loss of total weight 1, a rejected chip ``rejected`` times as much
    as a pseudo-negative."""
    pos = np.union1d(q, r)
    marked = np.union1d(pos, nr)
    rng = np.random.default_rng(seed)
    free = n - len(marked)
    take = min(pseudo, free)
    if take == free:
        sample = np.setdiff1d(np.arange(n), marked)
    else:  # draw with a margin, drop marked rows and repeats; rejection suits n >> marks
        sample = np.zeros(0, np.int64)
        while len(sample) < take:
            draw = rng.integers(0, n, 2 * take + 16)
            draw = draw[~np.isin(draw, marked)]
            sample = np.unique(np.concatenate([sample, draw]))
        sample = rng.permutation(sample)[:take]
    neg = np.concatenate([nr, np.sort(sample)])
    if not len(neg):
        raise RshashError("not_relevant_rows: a probe needs a chip that is not relevant")
    rows = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), -np.ones(len(neg))])
    w_neg = np.concatenate([np.full(len(nr), float(rejected)), np.ones(len(sample))])
    w = np.concatenate([np.full(len(pos), 0.5 / len(pos)), 0.5 * w_neg / w_neg.sum()])
    return rows, y, w


def _fit_logistic(Z: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = L2):
    """(coef, intercept) minimising ``sum_i w_i log(1 + exp(-y_i (Z_i coef + b))) +
    l2 / 2 |coef|^2`` (y in {-1, +1}, weights summing to 1; the intercept is not
    penalised): scikit-learn's LogisticRegression (lbfgs, ``C = 1 / l2``, the weights as
    sample weights), a smooth, strictly convex loss whose optimum is unique. BLAS runs
    on one thread: on a small fit its threads only wait for each other (on 2 busy cores
    a fit took 20x longer with two)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        fit = LogisticRegression(C=1.0 / l2, solver="lbfgs", tol=1e-10, max_iter=1000)
        fit.fit(np.asarray(Z, np.float64), y, sample_weight=w)
    sign = 1.0 if fit.classes_[1] > 0 else -1.0  # classes_ is sorted: (-1, +1)
    return sign * fit.coef_[0], sign * float(fit.intercept_[0])


def unpack_signs(codes: np.ndarray) -> np.ndarray:
    """Packed codes (m, bits/8) as +-1 float64 (m, bits), bit order as np.packbits."""
    return np.unpackbits(codes, axis=1).astype(np.float64) * 2.0 - 1.0


def linear_on_codes(codes: np.ndarray, coef: np.ndarray, intercept: float) -> np.ndarray:
    """``unpack_signs(codes) @ coef + intercept`` without unpacking: a table of each byte
    value's contribution per byte position, summed (bits/8 gathers over the codes)."""
    nbytes = codes.shape[1]
    signs = unpack_signs(np.arange(256, dtype=np.uint8)[:, None])  # (256, 8)
    table = signs @ coef.reshape(nbytes, 8).T  # (256, nbytes)
    out = np.full(len(codes), float(intercept))
    for j in range(nbytes):
        out += table[codes[:, j], j]
    return out


def probe_codes(
    codes,
    features,
    query_rows,
    relevant_rows=(),
    not_relevant_rows=(),
    *,
    pseudo=PSEUDO,
    seed=SEED,
    l2=L2,
    rejected=REJECTED,
):
    """The probability (0..1) that a chip is relevant, from a logistic probe on its code's
    bits (+-1) fitted on the marks and pseudo-negatives. ``features`` is not read."""
    codes = _codes(codes)
    q, r, nr = _marks(len(codes), query_rows, relevant_rows, not_relevant_rows)
    rows, y, w = _training_rows(len(codes), q, r, nr, pseudo, seed, rejected)
    coef, b = _fit_logistic(unpack_signs(codes[rows]), y, w, l2)
    return expit(linear_on_codes(codes, coef, b))


def probe_features(
    codes,
    features,
    query_rows,
    relevant_rows=(),
    not_relevant_rows=(),
    *,
    pseudo=PSEUDO,
    seed=SEED,
    l2=L2,
    rejected=REJECTED,
    chunk=CHUNK,
):
    """The probability (0..1) that a chip is relevant, from a logistic probe on its stored
    features, standardised by the mean and deviation of the rows it is fitted on (nearly
    all a uniform sample of the archive). Scoring reads the feature matrix once, ``chunk``
    rows at a time: a memory-mapped matrix is streamed, never loaded whole."""
    if features is None:
        raise RshashError("features: probe_features needs the archive's stored features")
    n = len(features)
    if codes is not None and len(codes) != n:
        raise RshashError(f"features: {n} rows, but {len(codes)} codes")
    q, r, nr = _marks(n, query_rows, relevant_rows, not_relevant_rows)
    rows, y, w = _training_rows(n, q, r, nr, pseudo, seed, rejected)
    order = np.argsort(rows)  # read a memory-mapped matrix in file order
    Z = np.empty((len(rows), features.shape[1]))
    Z[order] = features[rows[order]]
    mean, std = Z.mean(0), Z.std(0)
    std[std < 1e-6] = 1.0
    coef, b = _fit_logistic((Z - mean) / std, y, w, l2)
    coef = coef / std
    b -= float(mean @ coef)
    coef32 = coef.astype(np.float32)
    out = np.empty(n)
    for s in range(0, n, chunk):
        out[s : s + chunk] = np.asarray(features[s : s + chunk], np.float32) @ coef32
    return expit(out + b)


RULES = {"rocchio": rocchio, "probe_features": probe_features, "probe_codes": probe_codes}


def score(rule: str, codes, features, query_rows, relevant_rows=(), not_relevant_rows=(), **kw):
    """The scores of every chip under the rule named ``rule`` (:data:`RULES`)."""
    if rule not in RULES:
        raise RshashError(f"rule: unknown find-all rule {rule!r}; known: {', '.join(RULES)}")
    return RULES[rule](codes, features, query_rows, relevant_rows, not_relevant_rows, **kw)


def find_all(scores, threshold: float, relevant_rows=(), not_relevant_rows=()):
    """(rows, scores) of every chip to return, ranked: the chips marked relevant first
    (the person said so, whatever their score; the query's row is one to pass here), then
    every unmarked chip scoring at least ``threshold``, by score, higher first; ties by
    row. The chips marked not relevant are never returned. ``threshold`` -inf returns the
    whole archive but the rejected chips, ranked."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1 or not np.all(np.isfinite(scores)):
        raise RshashError("scores: a finite score per chip expected")
    threshold = float(threshold)
    if np.isnan(threshold) or threshold == np.inf:
        raise RshashError(f"threshold: must be a number below +inf (got {threshold})")
    n = len(scores)
    r = _rows(relevant_rows, n, "relevant_rows")
    nr = _rows(not_relevant_rows, n, "not_relevant_rows")
    if len(np.intersect1d(r, nr)):
        raise RshashError(f"not_relevant_rows: row {np.intersect1d(r, nr)[0]} is also relevant")
    free = np.ones(n, bool)
    free[r] = free[nr] = False
    above = np.flatnonzero(free & (scores >= threshold))
    first = r[np.argsort(-scores[r], kind="stable")]
    rest = above[np.argsort(-scores[above], kind="stable")]
    rows = np.concatenate([first, rest])
    return rows, scores[rows]


def merge_footprints(bounds) -> list:
    """One shapely polygon per patch of chips: footprints (n, 4) minx, miny, maxx, maxy in
    one CRS, unioned, so chips sharing an edge or overlapping (offset chips) become one
    polygon; chips touching only at a corner stay apart. Largest patch first."""
    import shapely

    bounds = np.asarray(bounds, np.float64).reshape(-1, 4)
    if not len(bounds):
        return []
    merged = shapely.union_all(shapely.box(*bounds.T))
    parts = list(getattr(merged, "geoms", [merged]))
    return sorted(parts, key=lambda p: -p.area)


# --- on an archive's index -----------------------------------------------------------


def default_rule(index) -> str:
    """The rule the study measured best for this index (benchmarks/results/findall.md):
    on codes of a trained cell, the probe on codes (AP 0.982 after 3 rounds against 0.932
    on features); on an archive's own unsupervised hash, whose codes keep less of what
    the features hold, the probe on the stored features when the index records them
    (0.932 against 0.884 on its codes)."""
    from rshash.methods import get_method

    method = get_method(index.header["method"]) if index.header.get("method") else None
    trained = method is not None and (method.supervised or method.trained())
    has_features = bool((index.header.get("geo") or {}).get("features"))
    return "probe_features" if has_features and not trained else "probe_codes"


@dataclass
class Found:
    """What find-all returns on an index: global rows ranked (the marked chips first),
    their scores, the rule and threshold used, and how many chips were scored."""

    rows: np.ndarray
    scores: np.ndarray
    rule: str
    threshold: float
    scored: int


def find_all_in(
    index,
    query=None,
    relevant=(),
    not_relevant=(),
    *,
    rule: str | None = None,
    threshold: float | None = None,
    place=None,
    features=None,
    threads: int = 1,
) -> Found:
    """Every chip of an indexed archive like the chips a person marked: ``query`` (an
    indexed id, or None), ``relevant`` and ``not_relevant`` ids; scored by ``rule``
    (default :func:`default_rule`) over the whole archive, kept at or above
    ``threshold`` (default the rule's :data:`THRESHOLDS`), optionally only those a
    :class:`rshash.archive.query.Place` admits. ``features``: the archive's features
    (n, D) when already loaded (a server keeps them); else read when the rule needs them
    (rshash.archive.geo.archive_features)."""
    from rshash.archive.query import row_of

    rule = rule or default_rule(index)
    if rule not in RULES:
        raise RshashError(f"rule: unknown find-all rule {rule!r}; known: {', '.join(RULES)}")
    threshold = THRESHOLDS[rule] if threshold is None else float(threshold)
    q = [] if query is None else [row_of(index, query)]
    r = [row_of(index, i, "relevant image") for i in dict.fromkeys(relevant)]
    nr = [row_of(index, i, "rejected image") for i in dict.fromkeys(not_relevant)]
    if not q and not r:
        raise RshashError("find-all needs a query chip of the archive or a chip marked relevant")
    codes = np.concatenate([s.codes.reconstruct_n(0, s.n) for s in index.segments])
    if rule == "probe_features" and features is None:
        from rshash.archive.geo import archive_features

        features = archive_features(index)
    extra = {"threads": threads} if rule == "rocchio" else {}
    scores = score(rule, codes, features, q, r, nr, **extra)
    rows, kept = find_all(scores, threshold, np.union1d(q, r).astype(np.int64), nr)
    if place is not None:
        keep = np.concatenate([place.mask(s) for s in index.segments])[rows]
        rows, kept = rows[keep], kept[keep]
    return Found(rows, kept, rule, threshold, len(codes))


def patches(index, found: Found) -> list[dict]:
    """The chips found, merged into one polygon per patch of adjacent or overlapping
    chips of one scene (the dates of one place are not merged): GeoJSON features with
    the patch's chips, best score, scene and date, largest patch first per scene."""
    import shapely

    by_scene: dict[int, list[int]] = {}
    for k, row in enumerate(found.rows):
        seg, r = index.locate(int(row))
        if seg.geo is None:
            raise RshashError("patches need an index of geo-referenced scenes")
        by_scene.setdefault(int(seg.geo["scene"][r]), []).append(k)
    out = []
    for scene, ks in by_scene.items():
        polys = [shapely.Polygon(index.geo_of(int(found.rows[k]))["footprint"]) for k in ks]
        merged = shapely.union_all(polys)
        parts = sorted(getattr(merged, "geoms", [merged]), key=lambda p: -p.area)
        tree = shapely.STRtree(polys)
        meta = index.scenes[scene]
        for part in parts:
            members = [ks[i] for i in tree.query(part, predicate="intersects")
                       if polys[i].intersection(part).area > 0]  # fmt: skip
            part = shapely.geometry.polygon.orient(part, 1.0)  # counter-clockwise (RFC 7946)
            out.append(
                {
                    "type": "Feature",
                    "geometry": shapely.geometry.mapping(part),
                    "properties": {
                        "scene": meta["id"],
                        "date": meta["date"],
                        "chips": len(members),
                        "best_score": round(float(found.scores[members].max()), 4),
                        "ids": [index.image_id_of(int(found.rows[k])) for k in members],
                    },
                }
            )
    return out


def as_document(index, found: Found, query: str | None, merge: bool = False) -> dict:
    """What find-all answers (the server's JSON, ``rshash findall --json``): the rule,
    threshold, chips scored and found, and each chip found described as a search's
    results are (rshash.archive.present.describe; a score, no distance); with
    ``merge``, the patches too."""
    from rshash.archive.present import describe
    from rshash.archive.query import Page

    page = Page(found.rows, np.zeros(len(found.rows), np.int64), found.scores, len(found.rows))
    results = describe(index, page)
    for r in results:
        r.pop("distance", None)
    doc = {
        "query": query,
        "rule": found.rule,
        "threshold": found.threshold,
        "scored": found.scored,
        "total": len(results),
        "results": results,
    }
    if merge:
        doc["patches"] = patches(index, found)
    return doc


def as_feature_collection(doc: dict) -> dict:
    """A find-all document as RFC 7946 GeoJSON: one polygon per chip found (rank, id,
    score, scene, date, window), or per patch when the document has them."""
    from rshash.archive.present import as_geojson

    if "patches" in doc:
        collection = {"type": "FeatureCollection", "features": doc["patches"]}
    else:
        collection = as_geojson([{**r, "distance": None} for r in doc["results"]], doc["query"])
    collection.update(rule=doc["rule"], threshold=doc["threshold"])
    return collection
