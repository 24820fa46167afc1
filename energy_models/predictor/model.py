"""Power, inter-token latency and energy per token on GPUs and LLMs never profiled.

WattGPU-style: public GPU specs and LLM shapes in, mean GPU power, inter-token latency (ITL)
and energy per output token out. Gradient-boosted trees learn the *correction* to the
analytical (roofline) model, log(measured / analytical), from features of the GPU, the LLM,
the workload and the serving stack; the analytical model's constants are fitted on the same
training rows, so nothing of a held-out GPU or LLM leaks into its own prediction.

The shipped predictor (``data/predictor.json.gz``) holds our fitted constants and trees as
plain numbers; ``Predictor.from_json`` needs neither the training data nor scikit-learn's
pickles. Each prediction carries an interval from the out-of-fold residuals of the same
kind of generalisation (an unseen GPU, an unseen LLM, or a seen pair).
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from energy_models.analytical.model import (
    WORK_COLUMNS,
    EngineConstants,
    analytical_costs,
    step_bytes,
)
from energy_models.catalog.specs import DeviceSpec, LlmSpec, get_device, get_llm
from energy_models.errors import CalibrationError, ModelFileError
from energy_models.stacks import STACKS, itl_is_step

PREDICTED_TARGETS = ("power_w", "itl_s", "energy_per_token_j")
"""Per-GPU mean power, mean time per output token of a request, and replica energy per output
token (all devices of the replica)."""

ARCHITECTURES = ("Turing", "Volta", "Ampere", "Ada Lovelace", "Hopper", "Blackwell")

GPU_FEATURES = ("bandwidth_gb_s", "fp16_tflops", "memory_gb", "tdp_w", "idle_w", "year",
                "architecture")
LLM_FEATURES = ("params_b", "active_params_b", "layers", "hidden_size", "heads", "kv_heads",
                "intermediate_size", "vocab_size", "weight_bytes_per_param", "moe", "hybrid")
WORK_FEATURES = ("batch", "tp", "input_tokens", "output_tokens", "engine")
PHYSICS_FEATURES = ("t_mem_step_s", "t_comp_step_s", "compute_share", "kv_mb_per_seq",
                    "analytical_power_frac", "analytical_log_itl", "analytical_log_jpt")
FEATURES = GPU_FEATURES + LLM_FEATURES + WORK_FEATURES + PHYSICS_FEATURES

# Load-scaled TDP baseline (WattGPU): rho by how loaded the GPU is.
RHO_LOW_RATE, RHO_HIGH_RATE, RHO_OFFLINE = 0.2, 0.6, 0.9
OFFLINE_BATCH = 32
"""From this many concurrent sequences a GPU counts as offline / large-batch for the baseline."""

INTERVAL_QUANTILES = (0.1, 0.9)
UNSEEN = ("pair", "gpu", "llm")
"""What a prediction has not seen: only the pair, the GPU, or the LLM (the widest wins)."""


def _architecture_code(name: str) -> float:
    return float(ARCHITECTURES.index(name)) if name in ARCHITECTURES else math.nan


def gpu_row(spec: DeviceSpec) -> dict[str, float]:
    return {"bandwidth_gb_s": spec.bandwidth_gb_s, "fp16_tflops": spec.fp16_tflops,
            "memory_gb": spec.memory_gb, "tdp_w": spec.tdp_w, "idle_w": spec.idle_w,
            "year": float(spec.year), "architecture": _architecture_code(spec.architecture)}


def llm_row(spec: LlmSpec) -> dict[str, float]:
    return {"params_b": spec.params_b, "active_params_b": spec.active_params_b,
            "layers": spec.layers, "hidden_size": spec.hidden_size, "heads": spec.heads,
            "kv_heads": spec.kv_heads, "intermediate_size": spec.intermediate_size,
            "vocab_size": spec.vocab_size,
            "weight_bytes_per_param": spec.weight_gb / spec.params_b,
            "moe": float(spec.active_params_b < spec.params_b),
            "hybrid": float(spec.kv_layers_ < spec.layers),
            "kv_mb_per_token": spec.kv_bytes_per_token / 1e6}


def measured_targets(table: pd.DataFrame) -> pd.DataFrame:
    """Per-GPU mean power, ITL and energy per output token of measurement-schema rows.

    Power is the replica's energy over its busy time, per device; ITL is the measured mean
    inter-token latency where the row has one, else runtime / output tokens.
    """
    batch, tp = table["batch"].to_numpy(float), table["tp"].to_numpy(float)
    runtime = table["runtime_s"].to_numpy(float)
    n = table["output_tokens"].to_numpy(float)
    energy = table["energy_j"].to_numpy(float)
    power = energy * batch / runtime / tp
    if "mean_power_w" in table.columns:
        measured_power = table["mean_power_w"].to_numpy(float) / tp
        power = np.where(np.isfinite(measured_power), measured_power, power)
    itl = runtime / n
    if "itl_s" in table.columns:
        measured_itl = table["itl_s"].to_numpy(float)
        itl = np.where(np.isfinite(measured_itl), measured_itl, itl)
    return pd.DataFrame({"power_w": power, "itl_s": itl, "energy_per_token_j": energy / n},
                        index=table.index)


POWERTRACE_FOLDER = "powertrace"


def training_rows(data_root: str | Path) -> pd.DataFrame:
    """ML.ENERGY v1 (``hf``, batch 1), v2 (``vllm-0.5``, batch and TP sweeps) and v3
    (``vllm``, H100), and the PowerTrace runs' steady windows (``vllm`` 0.10, A100 and H100)
    where present, as predictor rows, from the shared data folder ``data_root``.

    Model and GPU names map to catalog entries through the catalog's aliases; rows of models
    outside the catalog are left out. Each row records its stack family, the engine version
    that measured it, how the source defined ITL, and the mean time per output token
    (``tpot_s``, what the analytical model is fitted to).
    """
    from energy_models.analytical.fit import V1V2_FOLDER, V3_FOLDER
    from energy_models.measurements.mlenergy import (
        measurements_v1,
        measurements_v2,
        measurements_v3,
    )
    from energy_models.measurements.powertrace import powertrace_rows

    root = Path(data_root)
    sources = [measurements_v1(root / V1V2_FOLDER), measurements_v2(root / V1V2_FOLDER),
               measurements_v3(root / V3_FOLDER)]
    if (root / POWERTRACE_FOLDER).is_dir():
        sources.append(powertrace_rows(root / POWERTRACE_FOLDER))
    parts = []
    for measured in sources:
        table = measured.table
        parts.append(pd.concat([
            table.loc[:, ["llm", "device", "engine", "engine_version", "batch", "tp",
                          "input_tokens", "output_tokens", "config", "source"]],
            measured_targets(table),
            (table["runtime_s"] / table["output_tokens"]).rename("tpot_s"),
        ], axis=1))
    rows = pd.concat(parts, ignore_index=True)
    rows["itl_definition"] = rows["engine"].map(lambda e: STACKS[e].itl_definition)
    return rows


def fit_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Predictor rows in the analytical fit's columns (``mlenergy.FIT_COLUMNS``)."""
    return pd.DataFrame({
        "engine": rows["engine"], "llm": rows["llm"], "device": rows["device"],
        "input_tokens": rows["input_tokens"], "output_tokens": rows["output_tokens"],
        "batch": rows["batch"], "tp": rows["tp"],
        "energy_j": rows["energy_per_token_j"] * rows["output_tokens"],
        "time_per_token_s": rows["tpot_s"], "task": rows["config"].str.split(".").str[0],
        "source": rows["source"],
    })


def fit_constants(rows: pd.DataFrame, known: Mapping[str, EngineConstants] | None = None
                  ) -> dict[str, EngineConstants]:
    """The analytical model's constants per stack, fitted on these rows only; stacks in
    ``known`` keep the constants given (a fold that held out none of a stack's rows reuses
    them: the fit would be the same)."""
    from energy_models.analytical.fit import TP_OVERHEAD_DONOR, fit_engine

    constants: dict[str, EngineConstants] = dict(known or {})
    todo = set(rows["engine"].unique()) - set(constants)
    for engine in sorted(todo, key=lambda e: e in TP_OVERHEAD_DONOR):
        donor = TP_OVERHEAD_DONOR.get(engine)
        fixed = {"tp_overhead": constants[donor].tp_overhead} if donor in constants else {}
        constants[engine] = fit_engine(fit_table(rows[rows["engine"] == engine]), fixed).constants
    return dict(sorted(constants.items()))


def measured_itl_s(costs: pd.DataFrame, work: pd.DataFrame, engine: str) -> np.ndarray:
    """The ITL of analytical ``costs`` (priced with ``itl_is_step(engine)``) as ``engine``'s
    measurements define it: one decode step, or the TPOT form (replica time per request x
    batch / output tokens)."""
    if itl_is_step(engine):
        return costs["itl_s"].to_numpy(float)
    return (costs["replica_s"].to_numpy(float) * work["batch"].to_numpy(float)
            / work["output_tokens"].to_numpy(float))


def analytical_targets(work: pd.DataFrame, constants: Mapping[str, EngineConstants],
                       extra_llms: Mapping[str, LlmSpec] | None = None) -> pd.DataFrame:
    """The analytical model's power per GPU, ITL as the stack measures it (one decode step,
    or the TPOT form: replica time per request x batch / output tokens) and energy per token."""
    labels = work.index
    # Grouped by position: the caller's labels may repeat.
    work = work.reset_index(drop=True)
    parts = []
    for engine, rows in work.groupby("engine", sort=True):
        if engine not in constants:
            raise CalibrationError(f"no fitted stack {engine!r}; known: {sorted(constants)}")
        costs = analytical_costs(rows, constants[engine], extra_llms,
                                 itl_is_step=itl_is_step(engine))
        n = rows["output_tokens"].to_numpy(float)
        parts.append(pd.DataFrame({
            "power_w": costs["power_w"].to_numpy(float) / rows["tp"].to_numpy(float),
            "itl_s": measured_itl_s(costs, rows, engine),
            "energy_per_token_j": costs["energy_j"].to_numpy(float) / n,
        }, index=rows.index))
    return pd.concat(parts).sort_index().set_axis(labels)


def _specs(work: pd.DataFrame, extra_llms: Mapping[str, LlmSpec]) -> tuple[pd.DataFrame,
                                                                          pd.DataFrame]:
    llm = {name: llm_row(extra_llms.get(name) or get_llm(name)) for name in work["llm"].unique()}
    gpu = {name: gpu_row(get_device(name)) for name in work["device"].unique()}
    # One row per distinct name, repeated by position: no per-row dicts.
    llm_table = pd.DataFrame(list(llm.values()), index=list(llm)).loc[work["llm"].to_numpy()]
    gpu_table = pd.DataFrame(list(gpu.values()), index=list(gpu)).loc[work["device"].to_numpy()]
    return llm_table.set_axis(work.index), gpu_table.set_axis(work.index)


def features(work: pd.DataFrame, analytical: pd.DataFrame,
             extra_llms: Mapping[str, LlmSpec] | None = None) -> pd.DataFrame:
    """The model's inputs (FEATURES) per row of work, from the catalogs and the analytical
    model's predictions for the same rows."""
    llm, gpu = _specs(work, extra_llms or {})
    batch, tp = work["batch"].to_numpy(float), work["tp"].to_numpy(float)
    bandwidth = gpu["bandwidth_gb_s"].to_numpy() * 1e9
    specs = {name: (extra_llms or {}).get(name) or get_llm(name) for name in work["llm"].unique()}
    weight_bytes, cache_bytes = step_bytes(work, specs)
    t_mem = (weight_bytes + batch * cache_bytes) / (tp * bandwidth)
    t_comp = 2 * llm["active_params_b"].to_numpy() * 1e9 * batch / (
        tp * gpu["fp16_tflops"].to_numpy() * 1e12)
    table = pd.concat([gpu, llm], axis=1).assign(
        batch=batch, tp=tp, input_tokens=work["input_tokens"].to_numpy(float),
        output_tokens=work["output_tokens"].to_numpy(float),
        engine=work["engine"].map(lambda e: float(list(STACKS).index(e))).to_numpy(),
        kv_mb_per_seq=cache_bytes / 1e6,
        t_mem_step_s=t_mem, t_comp_step_s=t_comp,
        compute_share=t_comp / np.maximum(t_mem, t_comp),
        analytical_power_frac=analytical["power_w"].to_numpy() / gpu["tdp_w"].to_numpy(),
        analytical_log_itl=np.log(analytical["itl_s"].to_numpy()),
        analytical_log_jpt=np.log(analytical["energy_per_token_j"].to_numpy()),
    )
    return table.loc[:, list(FEATURES)]


def load_rho(batch: np.ndarray) -> np.ndarray:
    """The load-scaled TDP baseline's rho: offline / large batch 0.9, and a GPU serving fewer
    sequences back to back counts as high-rate serving, 0.6. (Low-rate serving, 0.2, is a GPU
    waiting for requests between them; no predicted or measured row here has that.)"""
    return np.where(batch >= OFFLINE_BATCH, RHO_OFFLINE, RHO_HIGH_RATE)


def wattgpu_baselines(work: pd.DataFrame, extra_llms: Mapping[str, LlmSpec] | None = None,
              rho: np.ndarray | None = None) -> pd.DataFrame:
    """WattGPU's physical baselines per row.

    ``tdp_power_w`` = rho * TDP per GPU. ``roofline_itl_s`` = 2 * params_B / bandwidth_GB/s
    per request, with the weights split over ``tp`` devices; ``roofline_kv_itl_s`` adds the
    KV cache the batch reads per step. The system's time per generated token is either ITL
    / batch (WattGPU's offline form); energy per token = power x devices x that time.
    """
    llm, gpu = _specs(work, extra_llms or {})
    batch, tp = work["batch"].to_numpy(float), work["tp"].to_numpy(float)
    rho = load_rho(batch) if rho is None else rho
    power = rho * gpu["tdp_w"].to_numpy()
    bandwidth = gpu["bandwidth_gb_s"].to_numpy()
    itl = 2.0 * llm["params_b"].to_numpy() / (tp * bandwidth)
    context = work["input_tokens"].to_numpy(float) + work["output_tokens"].to_numpy(float) / 2
    kv_gb = batch * context * llm["kv_mb_per_token"].to_numpy() / 1e3
    itl_kv = itl + kv_gb / (tp * bandwidth)
    return pd.DataFrame({
        "tdp_power_w": power, "roofline_itl_s": itl, "roofline_kv_itl_s": itl_kv,
        "roofline_system_s_per_token": itl / batch,
        "roofline_energy_per_token_j": power * tp * itl / batch,
        "roofline_kv_energy_per_token_j": power * tp * itl_kv / batch,
    }, index=work.index)


@dataclass(frozen=True)
class Trees:
    """A fitted HistGradientBoostingRegressor as plain arrays: its baseline plus one value per
    leaf of every tree. Splits send ``x <= threshold`` left and NaN where they learned to."""

    baseline: float
    feature: tuple[np.ndarray, ...]
    threshold: tuple[np.ndarray, ...]
    missing_left: tuple[np.ndarray, ...]
    left: tuple[np.ndarray, ...]
    right: tuple[np.ndarray, ...]
    leaf: tuple[np.ndarray, ...]
    value: tuple[np.ndarray, ...]
    _packed: _Packed | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_packed", _Packed.of(self))

    @classmethod
    def from_sklearn(cls, model) -> Trees:
        # scikit-learn keeps the fitted trees in `_predictors` (one list per iteration); their
        # node table has been stable since 0.21, and the tests check the copy predicts alike.
        nodes = [iteration[0].nodes for iteration in model._predictors]
        return cls(
            baseline=float(np.ravel(model._baseline_prediction)[0]),
            feature=tuple(n["feature_idx"].astype(np.int32) for n in nodes),
            threshold=tuple(n["num_threshold"].astype(float) for n in nodes),
            missing_left=tuple(n["missing_go_to_left"].astype(bool) for n in nodes),
            left=tuple(n["left"].astype(np.int32) for n in nodes),
            right=tuple(n["right"].astype(np.int32) for n in nodes),
            leaf=tuple(n["is_leaf"].astype(bool) for n in nodes),
            value=tuple(n["value"].astype(float) for n in nodes),
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self._packed is None:
            return self.predict_by_walking(x)
        return self._packed.predict(self.baseline, x)

    def predict_by_walking(self, x: np.ndarray) -> np.ndarray:
        """The same prediction, tree by tree and node by node (the reference; slow)."""
        x = np.asarray(x, dtype=float)
        total = np.full(len(x), self.baseline)
        rows = np.arange(len(x))
        for feature, threshold, missing_left, left, right, leaf, value in zip(
                self.feature, self.threshold, self.missing_left, self.left, self.right,
                self.leaf, self.value, strict=True):
            node = np.zeros(len(x), dtype=np.int32)
            while not leaf[node].all():
                inner = ~leaf[node]
                at = node[inner]
                seen = x[rows[inner], feature[at]]
                go_left = np.where(np.isnan(seen), missing_left[at], seen <= threshold[at])
                node[inner] = np.where(go_left, left[at], right[at])
            total += value[node]
        return total

    def to_dict(self) -> dict:
        """Each tree as a node list: ``[feature, threshold, left, right, nan_goes_left]`` for a
        split, ``[value]`` for a leaf; thresholds at full precision (a rounded one can send a row
        the other way), leaf values to 8 significant digits to keep the file small."""
        trees = []
        for i in range(len(self.feature)):
            nodes = []
            for j in range(len(self.leaf[i])):
                if self.leaf[i][j]:
                    nodes.append([float(f"{self.value[i][j]:.8g}")])
                else:
                    nodes.append([int(self.feature[i][j]), float(self.threshold[i][j]),
                                  int(self.left[i][j]), int(self.right[i][j]),
                                  int(self.missing_left[i][j])])
            trees.append(nodes)
        return {"baseline": float(f"{self.baseline:.12g}"), "trees": trees}

    @classmethod
    def from_dict(cls, body: Mapping) -> Trees:
        columns: dict[str, list[np.ndarray]] = {k: [] for k in (
            "feature", "threshold", "left", "right", "missing_left", "leaf", "value")}
        for nodes in body["trees"]:
            leaf = np.array([len(node) == 1 for node in nodes])
            split = [node if len(node) == 5 else [0, 0.0, 0, 0, 0] for node in nodes]
            columns["leaf"].append(leaf)
            columns["value"].append(np.array([node[0] if len(node) == 1 else 0.0
                                              for node in nodes], dtype=float))
            for k, name in enumerate(("feature", "threshold", "left", "right", "missing_left")):
                dtype = {"threshold": float, "missing_left": bool}.get(name, np.int32)
                columns[name].append(np.array([node[k] for node in split], dtype=dtype))
        return cls(baseline=float(body["baseline"]),
                   **{name: tuple(arrays) for name, arrays in columns.items()})


_MASK_DTYPES = ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64))
_CHUNK_ROWS = 256
"""Rows evaluated together: small enough that the (rows, splits) arrays stay in cache."""


@dataclass(frozen=True)
class _Packed:
    """Every tree's splits in one (trees, splits) table, evaluated QuickScorer-style: each
    split a row fails (goes right at) clears the leaves of its left subtree from the tree's
    bitmask of leaves in left-to-right order, and the row ends in the leftmost leaf left. All
    trees and splits are compared at once in numpy, with no walk from node to node; features
    are compared as ranks among each feature's thresholds (small integers, same outcome)."""

    feature: np.ndarray
    """(trees * splits,) feature of each split."""
    rank: np.ndarray
    """(trees * splits,) the split's threshold's rank among its feature's thresholds; a row
    goes left where its own rank (thresholds below its value) is at most this. Padding splits
    carry the largest value: every row goes left."""
    missing_left: np.ndarray
    clear: np.ndarray
    """(trees * splits,) the leaves that remain when a row goes right at the split."""
    value: np.ndarray
    """(trees, leaves) leaf values in left-to-right order."""
    thresholds: dict[int, np.ndarray]
    """Per feature split on, its distinct thresholds in ascending order."""
    trees: int
    splits: int

    @classmethod
    def of(cls, trees: Trees) -> _Packed | None:
        """The packed layout, or None when a tree has more leaves than a 64-bit mask holds."""
        n_leaves = max((int(leaf.sum()) for leaf in trees.leaf), default=0)
        dtype = next((d for bits, d in _MASK_DTYPES if n_leaves <= bits), None)
        if dtype is None or not trees.leaf:
            return None
        per_tree = [_tree_splits(trees, i) for i in range(len(trees.leaf))]
        n_splits = max(1, max(len(splits) for splits, _ in per_tree))
        shape = (len(per_tree), n_splits)
        feature = np.zeros(shape, dtype=np.intp)
        threshold = np.full(shape, np.inf)
        missing_left = np.ones(shape, dtype=bool)
        clear = np.full(shape, np.iinfo(dtype).max, dtype=dtype)
        value = np.zeros((len(per_tree), max(1, n_leaves)))
        for i, (splits, leaf_values) in enumerate(per_tree):
            for k, (f, t, nan_left, keep) in enumerate(splits):
                feature[i, k], threshold[i, k], missing_left[i, k] = f, t, nan_left
                clear[i, k] = keep & int(np.iinfo(dtype).max)
            value[i, :len(leaf_values)] = leaf_values
        real = np.isfinite(threshold)
        thresholds = {int(f): np.unique(threshold[real & (feature == f)])
                      for f in np.unique(feature[real])}
        most = max((len(t) for t in thresholds.values()), default=0)
        rank_dtype = np.uint16 if most < np.iinfo(np.uint16).max else np.uint32
        rank = np.full(shape, np.iinfo(rank_dtype).max, dtype=rank_dtype)
        for f, values in thresholds.items():
            at = real & (feature == f)
            rank[at] = np.searchsorted(values, threshold[at])
        return cls(feature.ravel(), rank.ravel(), missing_left.ravel(), clear.ravel(), value,
                   thresholds, len(per_tree), n_splits)

    def predict(self, baseline: float, x: np.ndarray) -> np.ndarray:
        ranks = np.zeros(x.shape, dtype=self.rank.dtype)
        for f, values in self.thresholds.items():
            ranks[:, f] = np.searchsorted(values, x[:, f], side="left")
        missing = np.isnan(x)
        has_missing = bool(missing[:, list(self.thresholds)].any())
        leaf_values = np.empty((self.trees, len(x)))
        tree_ids = np.arange(self.trees)[:, None]
        keep_all = self.clear.dtype.type(np.iinfo(self.clear.dtype).max)
        for start in range(0, len(x), _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, len(x))
            go_left = ranks[start:stop, self.feature] <= self.rank
            if has_missing:
                go_left = np.where(missing[start:stop, self.feature], self.missing_left,
                                   go_left)
            masks = self.clear | (go_left * keep_all)
            remaining = np.bitwise_and.reduce(masks.reshape(stop - start, self.trees,
                                                            self.splits), axis=2)
            leaf_values[:, start:stop] = self.value[tree_ids, _lowest_bit(remaining).T]
        # Tree by tree, in order: the same sums, bit for bit, as walking the trees.
        total = np.full(len(x), baseline)
        for values in leaf_values:
            total += values
        return total


_LOWEST_BIT_16 = np.zeros(1 << 16, dtype=np.intp)
_LOWEST_BIT_16[1:] = np.log2(np.arange(1, 1 << 16) & -np.arange(1, 1 << 16)).astype(np.intp)


def _lowest_bit(masks: np.ndarray) -> np.ndarray:
    """Index of the lowest set bit of each (non-zero) mask."""
    if masks.dtype.itemsize <= 2:
        return _LOWEST_BIT_16[masks]
    return np.log2((masks & (~masks + 1)).astype(float)).astype(np.intp)


def _tree_splits(trees: Trees, i: int) -> tuple[list[tuple[int, float, bool, int]],
                                                list[float]]:
    """Tree ``i``'s splits as (feature, threshold, NaN goes left, leaves kept when going
    right), and its leaf values left to right."""
    leaf, left, right = trees.leaf[i], trees.left[i], trees.right[i]
    first: dict[int, int] = {}  # node -> index of its leftmost leaf
    last: dict[int, int] = {}  # node -> one past its rightmost leaf
    leaf_values: list[float] = []
    stack: list[tuple[int, bool]] = [(0, False)]
    while stack:  # Iterative post-order walk: children before their parent.
        node, expanded = stack.pop()
        if leaf[node]:
            first[node], last[node] = len(leaf_values), len(leaf_values) + 1
            leaf_values.append(float(trees.value[i][node]))
        elif expanded:
            first[node], last[node] = first[int(left[node])], last[int(right[node])]
        else:
            stack += [(node, True), (int(right[node]), False), (int(left[node]), False)]
    splits = []
    for node in first:
        if not leaf[node]:
            lo, hi = first[int(left[node])], last[int(left[node])]
            keep = ~(((1 << (hi - lo)) - 1) << lo) & ((1 << 64) - 1)
            splits.append((int(trees.feature[i][node]), float(trees.threshold[i][node]),
                           bool(trees.missing_left[i][node]), keep))
    return splits, leaf_values


def fit_trees(x: pd.DataFrame, y: np.ndarray, seed: int = 0) -> Trees:
    """Gradient-boosted trees with settings fixed in advance (not tuned on held-out data)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    model = HistGradientBoostingRegressor(
        max_iter=300, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=10,
        l2_regularization=1.0, early_stopping=False, random_state=seed,
    )
    return Trees.from_sklearn(model.fit(x.to_numpy(float), y))


PREDICTOR_FORMS = ("physics", "correction", "raw", "analytical")
"""``physics``: log(measured / analytical) from features that do not name the GPU (no spec
column, no generation), so a GPU's speed and power reach a prediction only through the
analytical model's bandwidth and FLOP/s terms and extrapolate to faster GPUs the way the
roofline does. ``correction``: the same target from every feature. ``raw``: power / TDP, log
ITL, log J/token. ``analytical``: the analytical model with the stack's fitted constants and
no trees, kept where learned corrections rank unseen GPUs worse than the roofline does."""
CORRECTION_FORMS = ("physics", "correction")
TREE_FORMS = ("physics", "correction", "raw")


def form_features(form: str, feature_names: tuple[str, ...]) -> list[str]:
    """The features a form's trees split on."""
    if form == "physics":
        return [f for f in feature_names if f not in GPU_FEATURES]
    return list(feature_names)


def _encode(target: str, form: str, values: np.ndarray, analytical: np.ndarray,
            tdp_w: np.ndarray) -> np.ndarray:
    if form in CORRECTION_FORMS:
        return np.log(values / analytical)
    if target == "power_w":
        return values / tdp_w
    return np.log(values)


def _decode(target: str, form: str, learned: np.ndarray, analytical: np.ndarray,
            tdp_w: np.ndarray) -> np.ndarray:
    if form in CORRECTION_FORMS:
        return analytical * np.exp(learned)
    if target == "power_w":
        return learned * tdp_w
    return np.exp(learned)


def interval_key(unseen: str, stack: str) -> str:
    """Intervals are calibrated per kind of unseen (UNSEEN) and stack: the current stack's
    residuals are not the 2023 stack's."""
    return f"{unseen}:{stack}"


@dataclass(frozen=True)
class Predictor:
    """Analytical constants per stack and, per target, trees in one form, fitted together."""

    constants: dict[str, EngineConstants]
    forms: dict[str, str]
    feature_names: tuple[str, ...]
    """Which of FEATURES the trees split on."""
    trees: dict[str, Trees]
    """Per target whose form is in TREE_FORMS."""
    seen_gpus: tuple[str, ...]
    seen_llms: tuple[str, ...]
    intervals: dict[str, dict[str, tuple[float, float]]]
    """Per ``interval_key(unseen, stack)`` and target: bounds of log(measured / predicted)."""
    provenance: dict

    @property
    def stacks(self) -> tuple[str, ...]:
        return tuple(sorted(self.constants))

    @classmethod
    def fit(cls, rows: pd.DataFrame, forms: Mapping[str, str] | None = None,
            intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
            provenance: Mapping | None = None, feature_names: tuple[str, ...] = FEATURES,
            constants: Mapping[str, EngineConstants] | None = None,
            seed: int = 0) -> Predictor:
        """Fit on predictor rows (``training_rows`` columns): the analytical constants (unless
        given, fitted on the same rows), then the trees."""
        forms = dict(forms or dict.fromkeys(PREDICTED_TARGETS, "physics"))
        constants = dict(constants or fit_constants(rows))
        analytical = analytical_targets(rows, constants)
        table = features(rows, analytical)
        tdp = table["tdp_w"].to_numpy()
        trees = {target: fit_trees(table.loc[:, form_features(forms[target], feature_names)],
                                   _encode(target, forms[target], rows[target].to_numpy(float),
                                              analytical[target].to_numpy(float), tdp), seed)
                 for target in PREDICTED_TARGETS if forms[target] in TREE_FORMS}
        return cls(constants, forms, tuple(feature_names), trees,
                   tuple(sorted(rows["device"].unique())),
                   tuple(sorted(rows["llm"].unique())),
                   {k: dict(v) for k, v in (intervals or {}).items()}, dict(provenance or {}))

    def predict(self, work: pd.DataFrame,
                extra_llms: Mapping[str, LlmSpec] | None = None) -> pd.DataFrame:
        """PREDICTED_TARGETS for each row of work (WORK_COLUMNS and ``engine``), with
        ``<target>_low`` and ``<target>_high`` where the predictor carries intervals, and
        ``unseen``."""
        missing = [c for c in (*WORK_COLUMNS, "engine") if c not in work.columns]
        if missing:
            raise CalibrationError(f"work table lacks column {missing[0]!r}")
        unknown = sorted(set(work["engine"]) - set(self.constants))
        if unknown:
            raise CalibrationError(f"no fitted stack {unknown[0]!r}; known: "
                                   f"{', '.join(self.stacks)} (calibrate one of them with "
                                   f"measurements of yours)")
        analytical = analytical_targets(work, self.constants, extra_llms)
        table = features(work, analytical, extra_llms)
        tdp = table["tdp_w"].to_numpy()
        out = pd.DataFrame(index=work.index)
        for target in PREDICTED_TARGETS:
            form = self.forms[target]
            if form not in TREE_FORMS:
                out[target] = analytical[target].to_numpy(float)
                continue
            x = table.loc[:, form_features(form, self.feature_names)].to_numpy(float)
            out[target] = _decode(target, form, self.trees[target].predict(x),
                                  analytical[target].to_numpy(float), tdp)
        out["unseen"] = self.unseen(work)
        for target in PREDICTED_TARGETS:
            if not self.intervals:
                break
            keys = [interval_key(kind, stack)
                    for kind, stack in zip(out["unseen"], work["engine"], strict=True)]
            low = np.array([self.intervals[key][target][0] for key in keys])
            high = np.array([self.intervals[key][target][1] for key in keys])
            out[f"{target}_low"] = out[target] * np.exp(low)
            out[f"{target}_high"] = out[target] * np.exp(high)
        return out

    def unseen(self, work: pd.DataFrame) -> pd.Series:
        """``gpu`` where the GPU was not in the training data, else ``llm`` where the LLM was
        not, else ``pair``."""
        gpu_seen = work["device"].isin(self.seen_gpus)
        llm_seen = work["llm"].isin(self.seen_llms)
        return pd.Series(np.where(~gpu_seen, "gpu", np.where(~llm_seen, "llm", "pair")),
                         index=work.index)

    def to_json(self) -> str:
        body = {
            "constants": {k: asdict(v) for k, v in sorted(self.constants.items())},
            "forms": self.forms, "features": list(self.feature_names),
            "seen_gpus": list(self.seen_gpus), "seen_llms": list(self.seen_llms),
            "intervals": {kind: {t: [round(lo, 6), round(hi, 6)] for t, (lo, hi) in v.items()}
                          for kind, v in sorted(self.intervals.items())},
            "provenance": self.provenance,
            "trees": {t: trees.to_dict() for t, trees in sorted(self.trees.items())},
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"

    def to_gzip(self) -> bytes:
        """``to_json`` compressed, byte-stable (no timestamp in the header)."""
        return gzip.compress(self.to_json().encode(), compresslevel=9, mtime=0)

    @classmethod
    def from_json(cls, text: str, origin: str = "predictor file") -> Predictor:
        try:
            body = json.loads(text)
            if not set(body["features"]) <= set(FEATURES):
                raise ModelFileError(f"{origin}: fitted on other features; refit it with "
                                     f"benchmarks/predictor_accuracy.py --write")
            forms = dict(body["forms"])
            if set(forms) != set(PREDICTED_TARGETS) or not set(forms.values()) <= set(
                    PREDICTOR_FORMS):
                raise ModelFileError(f"{origin}: forms {forms} are not one of "
                                     f"{', '.join(PREDICTOR_FORMS)} per target; refit it with "
                                     f"benchmarks/predictor_accuracy.py --write")
            return cls(
                constants={k: EngineConstants(**v) for k, v in body["constants"].items()},
                forms=forms, feature_names=tuple(body["features"]),
                trees={t: Trees.from_dict(body["trees"][t]) for t in PREDICTED_TARGETS
                       if forms[t] in TREE_FORMS},
                seen_gpus=tuple(body["seen_gpus"]), seen_llms=tuple(body["seen_llms"]),
                intervals={kind: {t: (float(lo), float(hi)) for t, (lo, hi) in v.items()}
                           for kind, v in body["intervals"].items()},
                provenance=body["provenance"],
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"{origin}: not a predictor file ({exc})") from None


PREDICTOR_FILE = "predictor.json.gz"


@cache
def shipped_predictor() -> Predictor:
    """The predictor fitted on ML.ENERGY v1 and v2, as shipped with the package."""
    packed = resources.files("energy_models").joinpath("data", PREDICTOR_FILE).read_bytes()
    return Predictor.from_json(gzip.decompress(packed).decode(),
                               f"energy_models/data/{PREDICTOR_FILE}")


@dataclass(frozen=True)
class Calibration:
    """Factors that rescale one stack's predictions to measurements of the user's own stack."""

    stack: str
    factors: dict[str, float]
    points: int
    device: str

    @classmethod
    def fit(cls, predictor: Predictor, measured: pd.DataFrame, stack: str) -> Calibration:
        """Per target, the geometric median of measured / predicted over the rows (measurement
        schema) — robust to one odd point among a handful."""
        if measured.empty:
            raise CalibrationError("no calibration rows")
        devices = sorted(measured["device"].unique())
        work = measured.loc[:, list(WORK_COLUMNS)].assign(engine=stack)
        predicted = predictor.predict(work)
        truth = measured_targets(measured)
        factors = {}
        for target in PREDICTED_TARGETS:
            with np.errstate(all="ignore"):
                log_ratio = np.log(truth[target].to_numpy(float)
                                   / predicted[target].to_numpy(float))
            # Rows far outside any serving regime (1e308 tokens) give no finite ratio.
            log_ratio = log_ratio[np.isfinite(log_ratio)]
            factor = float(np.exp(np.median(log_ratio))) if len(log_ratio) else math.nan
            if not (math.isfinite(factor) and factor > 0):
                raise CalibrationError(f"no row gives a finite measured / predicted {target}; "
                                       f"calibrate with measurements of real serving runs")
            factors[target] = factor
        return cls(stack, factors, len(measured), ", ".join(devices))

    def apply(self, predicted: pd.DataFrame) -> pd.DataFrame:
        out = predicted.copy()
        for target, factor in self.factors.items():
            for column in (target, f"{target}_low", f"{target}_high"):
                if column in out.columns:
                    out[column] = out[column] * factor
        return out
