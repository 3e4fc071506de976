"""How many runners a model zoo needs for a wall time: the arithmetic of docs/zoo.md.

    python scripts/zoo_plan.py --models 1000 --seconds-per-model 180 --hours 1 --setup 300

Shards are picked by content hash (converters/manifest.py), so they are not exactly equal:
the wall time is that of the fullest shard. This script hashes `--models` synthetic model
names the way `convert --shard` hashes files (sha256, modulo N) and reports, for each N,
the fullest shard and its time; the first N whose fullest shard fits the budget is the
answer. Deterministic: the same arguments print the same table.
"""

import argparse
import hashlib
import math
import sys


def fullest_shard(models, n, seed=0):
    counts = [0] * n
    for i in range(models):
        h = hashlib.sha256(f"{seed}:model-{i}".encode()).hexdigest()
        counts[int(h, 16) % n] += 1
    return max(counts)


def plan(models, seconds, hours, setup, trials=5):
    """Rows (n, fullest shard over `trials` folders, wall seconds) up to the first N that fits."""
    budget = hours * 3600 - setup
    if budget <= 0:
        raise SystemExit("the setup alone takes longer than the wall time")
    ideal = math.ceil(models * seconds / budget)
    rows = []
    for n in range(max(1, ideal), models + 1):
        worst = max(fullest_shard(models, n, seed) for seed in range(trials))
        wall = setup + worst * seconds
        rows.append((n, worst, wall))
        if wall <= hours * 3600:
            break
    return ideal, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--seconds-per-model", type=float, required=True,
                    help="measured time to convert and validate one model to every target")
    ap.add_argument("--hours", type=float, default=1.0, help="wall time budget")
    ap.add_argument("--setup", type=float, default=300, help="per-runner setup seconds (install, imports)")
    a = ap.parse_args(argv)
    ideal, rows = plan(a.models, a.seconds_per_model, a.hours, a.setup)
    total_h = a.models * a.seconds_per_model / 3600
    print(f"{a.models} models x {a.seconds_per_model:.0f} s = {total_h:.1f} machine-hours of conversion")
    print(f"perfectly even shards would need {ideal} runners; hash shards are uneven, so:")
    print(f"{'N':>5} {'fullest shard':>14} {'wall min':>9}")
    for n, worst, wall in rows[:3] + (rows[-2:] if len(rows) > 5 else rows[3:]):
        print(f"{n:>5} {worst:>14} {wall / 60:>9.1f}")
    n, worst, wall = rows[-1]
    print(f"-> {n} runners: fullest shard {worst} models, {wall / 60:.0f} min wall "
          f"(average shard {a.models / n:.1f} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
