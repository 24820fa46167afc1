"""Energy per output token over output length, and where it is lowest (the "sweet spot").

A request pays a fixed cost (prefill, setup) that more output tokens amortise, and a cost per
token that grows with the sequence (attention over a longer KV cache). Energy per output token
E(m, n)/n therefore falls, then rises: for the SweetSpot form the minimum is at
n* = sqrt((c0 + c1·m + c2·m²)/c5). Any cost source works here; the search is numerical and the
closed form is reported beside it when the pair's fitted form is SweetSpot's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from energy_models.catalog.specs import get_device, get_llm
from energy_models.cost import CostChain
from energy_models.errors import CalibrationError
from energy_models.regression.fitting import FittedModel, FittedModels, finite_or_none
from energy_models.stacks import DEFAULT_STACK

SEARCH_POINTS = 600


@dataclass(frozen=True)
class SweetSpot:
    llm: str
    device: str
    tp: int
    batch: float
    input_tokens: float
    output_tokens: float
    """The output length with the least energy per output token."""
    energy_per_token_j: float
    source: str
    searched: tuple[float, float]
    """The output lengths searched."""
    at_edge: bool
    """The minimum lies at an end of the searched range: the true one may lie beyond."""
    spread: float
    """Highest over lowest energy per output token within the searched range."""
    closed_form_tokens: float | None
    """sqrt((c0 + c1·m + c2·m²)/c5) when the pair's energy fit has the SweetSpot form."""
    curve: pd.DataFrame
    """output_tokens and energy_per_token_j along the search."""

    def summary(self) -> dict:
        """The sweet spot as one JSON-able record (numbers finite or None)."""
        return {
            "llm": self.llm, "device": self.device, "tp": self.tp, "batch": self.batch,
            "input_tokens": self.input_tokens, "output_tokens": round(self.output_tokens, 1),
            "energy_per_token_j": finite_or_none(self.energy_per_token_j),
            "source": self.source, "searched_output_tokens": list(self.searched),
            "at_edge": self.at_edge, "spread": finite_or_none(self.spread),
            "closed_form_output_tokens": finite_or_none(self.closed_form_tokens),
        }

    def curve_at(self, output_tokens: list[float]) -> list[tuple[float, float]]:
        """(n, J per output token) at the searched points nearest each n inside the range."""
        points = []
        for n in output_tokens:
            if self.searched[0] <= n <= self.searched[1]:
                nearest = (self.curve.output_tokens - n).abs().argmin()
                points.append((n, float(self.curve.energy_per_token_j.iloc[nearest])))
        return points


def _work(llm: str, device: str, tp: int, batch: float, m: np.ndarray,
          n: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"llm": llm, "device": device, "input_tokens": m, "output_tokens": n,
                         "batch": float(batch), "tp": int(tp)})


def pricing_fit(models: FittedModels | None, llm: str, device: str, tp: int, engine: str,
                batch: float) -> FittedModel | None:
    """The energy fit the cost chain will use for this pair and batch, if any."""
    if models is None:
        return None
    fitted, _ = models.usable(llm, device, tp, engine)
    if not fitted:
        return None
    lo, hi = fitted["energy_j"].domain["batch"]
    return fitted["energy_j"] if lo * (1 - 1e-9) <= batch <= hi * (1 + 1e-9) else None


def output_range(llm: str, input_tokens: float, fit: FittedModel | None) -> tuple[float, float]:
    """Output lengths worth searching: the model's context, or a fit's measured range."""
    top = get_llm(llm).max_context - input_tokens
    if top < 2:
        raise CalibrationError(f"input tokens {input_tokens:g} leave no room for output in "
                               f"{llm}'s context of {get_llm(llm).max_context}")
    if fit is not None:
        lo, hi = fit.domain["output_tokens"]
        return lo, min(hi, top)
    return 1.0, top


def _closed_form(energy: FittedModel | None, m: float) -> float | None:
    if energy is None or energy.form != "sweetspot":
        return None
    c = dict(zip(energy.terms, energy.coef, strict=True))
    if c["n2"] <= 0:
        return None
    return float(np.sqrt((c["1"] + c["m"] * m + c["m2"] * m * m) / c["n2"]))


def sweet_spot(chain: CostChain, llm: str, device: str, input_tokens: float, *,
               batch: float = 1, tp: int = 1, models: FittedModels | None = None,
               engine: str = DEFAULT_STACK) -> SweetSpot:
    """The output length minimising energy per output token, priced by ``chain``."""
    llm, device = get_llm(llm).name, get_device(device).name
    fit = pricing_fit(models, llm, device, tp, engine, batch)
    lo, hi = output_range(llm, input_tokens, fit)
    n = np.unique(np.geomspace(lo, hi, SEARCH_POINTS))
    costs = chain.costs(_work(llm, device, tp, batch, np.full(len(n), float(input_tokens)), n))
    per_token = costs["energy_j"].to_numpy(float) / n
    best = int(np.argmin(per_token))
    sources = sorted(set(costs["source"]))
    return SweetSpot(
        llm=llm, device=device, tp=tp, batch=float(batch), input_tokens=float(input_tokens),
        output_tokens=float(n[best]), energy_per_token_j=float(per_token[best]),
        source=", ".join(sources), searched=(float(lo), float(hi)),
        at_edge=best in (0, len(n) - 1), spread=float(per_token.max() / per_token.min()),
        closed_form_tokens=_closed_form(fit, input_tokens),
        curve=pd.DataFrame({"output_tokens": n, "energy_per_token_j": per_token}),
    )


def heat_map(chain: CostChain, llm: str, device: str, *, batch: float = 1, tp: int = 1,
             models: FittedModels | None = None, engine: str = DEFAULT_STACK,
             mark_input_tokens: float | None = None) -> Figure:
    """Energy per output token over (input, output) tokens, with the sweet-spot curve."""
    llm, device = get_llm(llm).name, get_device(device).name
    context = get_llm(llm).max_context
    m_lo, m_hi = 1.0, context / 2
    n_lo, n_hi = 1.0, context / 2
    fit = pricing_fit(models, llm, device, tp, engine, batch)
    if fit is not None:
        m_lo, m_hi = fit.domain["input_tokens"][0], min(fit.domain["input_tokens"][1], m_hi)
        n_lo, n_hi = fit.domain["output_tokens"][0], min(fit.domain["output_tokens"][1], n_hi)
    m_axis = np.geomspace(m_lo, m_hi, 60)
    n_axis = np.geomspace(n_lo, n_hi, 60)
    mm, nn = np.meshgrid(m_axis, n_axis)
    costs = chain.costs(_work(llm, device, tp, batch, mm.ravel(), nn.ravel()))
    per_token = (costs["energy_j"].to_numpy(float) / nn.ravel()).reshape(mm.shape)
    best_n = n_axis[np.argmin(per_token, axis=0)]

    # The object API needs no GUI backend and leaves pyplot's global state alone.
    fig = Figure(figsize=(7.5, 5.5), dpi=120)
    ax = fig.subplots()
    mesh = ax.pcolormesh(m_axis, n_axis, per_token, shading="auto", cmap="viridis",
                         norm=LogNorm(vmin=per_token.min(), vmax=per_token.max()))
    fig.colorbar(mesh, ax=ax, label="energy per output token (J)")
    ax.plot(m_axis, best_n, color="white", lw=2, label="sweet spot: least J per output token")
    if mark_input_tokens is not None:
        ax.axvline(mark_input_tokens, color="white", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input tokens m")
    ax.set_ylabel("output tokens n")
    source = ", ".join(sorted(set(costs["source"])))
    ax.set_title(f"{llm} on {device} (tp {tp}, batch {batch:g}): {source}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
