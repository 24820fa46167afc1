"""Fit the analytical model's constants per stack family to ML.ENERGY; print its error per GPU.

    python benchmarks/analytical_accuracy.py [--data ../shared/data] [--write]

``--write`` refreshes energy_models/data/analytical_params.json (the shipped constants).
Skips (exit 0) when the shared data is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from energy_models.analytical.fit import V1V2_FOLDER, V3_FOLDER, fit_shipped_constants
from energy_models.analytical.model import constants_to_json, shipped_constants
from energy_models.io import write_atomic

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--write", action="store_true", help="refresh the shipped constants")
    args = parser.parse_args(argv)
    for folder in (V1V2_FOLDER, V3_FOLDER):
        if not (args.data / folder).is_dir():
            print(f"skipped: {args.data / folder} not found")
            return 0
    refit = fit_shipped_constants(args.data)
    constants, provenance, errors = refit.constants, refit.provenance, refit.errors
    print("Analytical model vs ML.ENERGY, median absolute % error per GPU (fitted constants)")
    print(errors[["engine", "device", "rows", "energy_mdape_pct", "time_mdape_pct"]]
          .to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    for engine, fit in provenance["fits"].items():
        print(f"{engine}: {fit}")
    text = constants_to_json(constants, provenance)
    target = ROOT / "energy_models" / "data" / "analytical_params.json"
    if args.write:
        write_atomic(target, text)
        print(f"wrote {target}")
    elif stale := refit.stale(shipped_constants()):
        drifts = ", ".join(f"{engine} by {drift:.2g}" for engine, drift in stale.items())
        print(f"note: shipped constants differ from this fit ({drifts}); rerun with --write "
              f"to refresh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
