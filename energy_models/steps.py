"""Step-level costs of one replica, for the replay: what one decode step and one prefill
chunk take and draw, from the same formulas that price a request for the planner
(``energy_models.analytical.model``).

A planned price is a steady state: every step runs ``batch`` sequences at the mean context
and each request's prefill once. Replaying steps of that size at that context gives back the
planner's replica time and energy per request exactly (``StepCosts.steady_state``), so the
replay differs from the plan only where traffic does: partial batches, queueing, bursts,
preemption. Where a fitted regression or the predictor priced the plan instead,
``calibrated`` scales step time and busy power so that the steady state matches that price.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from energy_models.analytical.model import (
    GB,
    TFLOP,
    EngineConstants,
    decode_step_costs,
    prefill_costs,
)
from energy_models.catalog.specs import DeviceSpec, LlmSpec


@functools.lru_cache(maxsize=4096)
def _weight_read_bytes(llm: LlmSpec, batch: int) -> float:
    """Weight bytes a decode step of ``batch`` reads (a MoE reads more with the batch): the
    replay asks the same few batches millions of times."""
    return float(llm.weight_read_gb(batch)) * GB


@dataclass(frozen=True)
class StepCosts:
    """One replica of ``llm`` on ``tp`` x ``device`` under a serving stack's ``constants``.
    Times in seconds, powers for the whole replica (every device) in watts."""

    llm: LlmSpec
    device: DeviceSpec
    tp: int
    constants: EngineConstants
    power_cap_w: float = np.inf
    """Per device."""
    time_scale: float = 1.0
    """Step and prefill times are the analytical ones times this (calibration)."""
    busy_power_scale: float = 1.0
    """Power above idle is the analytical one times this (calibration)."""

    @property
    def idle_power_w(self) -> float:
        return self.device.idle_w * self.tp

    def _spec(self, batch: float, context_tokens) -> dict[str, float | np.ndarray]:
        return {
            "active": self.llm.active_params_b * GB,
            "weight_bytes": self.llm.weight_gb * GB,
            "weight_read_bytes": _weight_read_bytes(self.llm, batch),
            "cache_bytes_per_seq": np.asarray(self.llm.kv_bytes_per_sequence(context_tokens),
                                              dtype=float),
            "layers": float(self.llm.kv_layers_),
            "hidden": float(self.llm.hidden_size),
            "bandwidth": self.device.bandwidth_gb_s * GB,
            "flops": self.device.fp16_tflops * TFLOP,
            "tdp_w": self.device.tdp_w,
            "idle_w": self.device.idle_w,
        }

    def _replica_w(self, device_w):
        idle_w = self.device.idle_w
        return (idle_w + (device_w - idle_w) * self.busy_power_scale) * self.tp

    def decode_step(self, batch: int, context_tokens: float) -> tuple[float, float]:
        """(time_s, power_w) of one decode step of ``batch`` sequences at a mean context of
        ``context_tokens`` (prompt plus the tokens generated so far)."""
        t_step, power_w = self.decode_steps(batch, context_tokens)
        return float(t_step), float(power_w)

    def decode_steps(self, batch: int, context_tokens) -> tuple[np.ndarray, np.ndarray]:
        """``decode_step`` at each of the mean contexts ``context_tokens`` (an array)."""
        context = np.asarray(context_tokens, dtype=float)
        t_step, device_w = decode_step_costs(self._spec(batch, context), batch, context,
                                             self.tp, self.constants, self.power_cap_w)
        return t_step * self.time_scale, self._replica_w(device_w)

    def prefill(self, done_tokens: float, tokens: float) -> tuple[float, float]:
        """(time_s, power_w) of prefilling ``tokens`` more of a prompt whose first
        ``done_tokens`` are in the cache: chunks of one prompt add up to its whole prefill
        (the weights are read once, with the first chunk)."""
        spec = self._spec(1, done_tokens + tokens)
        end_s, device_w = prefill_costs(spec, done_tokens + tokens, self.tp, self.constants,
                                        self.power_cap_w)
        if done_tokens > 0:
            start_s, _ = prefill_costs(spec, done_tokens, self.tp, self.constants,
                                       self.power_cap_w)
            end_s = end_s - start_s
        return float(end_s) * self.time_scale, float(self._replica_w(device_w))

    def steady_state(self, batch: int, input_tokens: float,
                     output_tokens: float) -> tuple[float, float]:
        """(replica_s, energy_j) per request when every step runs ``batch`` sequences of
        ``input_tokens`` + ``output_tokens`` at their mean context: the planner's price."""
        step_s, step_w = self.decode_step(batch, input_tokens + output_tokens / 2.0)
        prefill_s, prefill_w = self.prefill(0.0, input_tokens)
        decode_s = output_tokens * step_s / batch
        return prefill_s + decode_s, prefill_w * prefill_s + step_w * decode_s

    def calibrated(self, batch: int, input_tokens, output_tokens, *, replica_s: float,
                   energy_j: float, weights=None) -> StepCosts:
        """A copy whose steady state at ``batch`` over the requests of ``input_tokens`` and
        ``output_tokens`` (numbers, or arrays of a mix with ``weights``) adds up to
        ``replica_s`` and ``energy_j``, weighted the same way (a fitted or predicted price):
        time scaled first, then power above idle."""
        tokens_in = np.atleast_1d(np.asarray(input_tokens, dtype=float))
        tokens_out = np.broadcast_to(np.asarray(output_tokens, dtype=float), tokens_in.shape)
        share = np.ones_like(tokens_in) if weights is None else np.broadcast_to(
            np.asarray(weights, dtype=float), tokens_in.shape)

        def totals(costs: StepCosts) -> tuple[float, float]:
            pairs = [costs.steady_state(batch, m, n) for m, n in zip(tokens_in, tokens_out,
                                                                     strict=True)]
            return (float(np.dot(share, [t for t, _ in pairs])),
                    float(np.dot(share, [e for _, e in pairs])))

        own_s, _ = totals(self)
        timed = dataclasses.replace(self, time_scale=self.time_scale * replica_s / own_s)
        _, timed_j = totals(timed)
        idle_j = self.idle_power_w * replica_s
        scale = (energy_j - idle_j) / max(timed_j - idle_j, 1e-12)
        return dataclasses.replace(timed, busy_power_scale=self.busy_power_scale
                                   * max(scale, 0.0))
