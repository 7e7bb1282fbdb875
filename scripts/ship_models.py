"""Copy finished MNIST training runs into the package as the shipped default models (float16 weights).

    python scripts/ship_models.py runs/mnist-routing mnist-routing --snapshots 1000,2000
    python scripts/ship_models.py runs/mnist-masking mnist-masking
    python scripts/ship_models.py runs/mnist-dense mnist-dense

Each run directory is what `sparseguidance train` left; `load_model` casts the float16 weights back to float32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sparseguidance.pretrained import SHIPPED_DIR, SHIPPED_MODELS, ship_run


def main() -> None:
    """Ship one run under its name."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run directory")
    parser.add_argument("name", choices=SHIPPED_MODELS)
    parser.add_argument("--snapshots", default="", help="training steps of the EMA snapshots to keep, e.g. 1000,2000")
    args = parser.parse_args()
    steps = [int(s) for s in args.snapshots.split(",") if s]
    size = ship_run(args.run, SHIPPED_DIR / args.name, steps)
    print(f"shipped {args.run} as {SHIPPED_DIR / args.name} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
