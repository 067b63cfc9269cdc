#!/usr/bin/env python3
"""Plot completed leechers over time from `ringseed-loadtest swarm` reports.

usage: plot_swarm.py REPORT.json [REPORT.json ...] [-o swarm.png] [--title T]
                     [--fraction]

Each report (written with `swarm --report FILE` or printed by `--json`) is
one line: leechers completed (y) against seconds since the start of the run
(x), as a step function, labelled with the report's `--label` (e.g. plain,
super-seed) and its origin amplification. A dashed vertical line marks each
run's lower bound when it has one. `--fraction` plots the share of leechers
instead, to compare runs of different sizes. Needs matplotlib
(`python3 -m pip install matplotlib`).
"""
import argparse
import json
import sys


def load(path):
    with open(path) as f:
        report = json.load(f)
    s = report["summary"]
    label = report.get("label") or path
    return label, s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", help="swarm JSON reports")
    ap.add_argument("-o", "--output", default="swarm.png", help="PNG to write")
    ap.add_argument("--title", default="Swarm completion", help="plot title")
    ap.add_argument(
        "--fraction", action="store_true", help="y = share of leechers completed"
    )
    args = ap.parse_args()

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit(
            "plot_swarm.py needs matplotlib: install it with "
            "`python3 -m pip install matplotlib` (or your distribution's python3-matplotlib)"
        )

    fig, ax = plt.subplots(figsize=(8, 5))
    for path in args.reports:
        try:
            label, s = load(path)
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"{path}: not a swarm report ({e})")
        points = s.get("completions_over_time") or []
        xs = [0.0] + [p[0] for p in points]
        ys = [0] + [p[1] for p in points]
        if args.fraction:
            n = max(s.get("leechers") or 1, 1)
            ys = [y / n for y in ys]
        amp = s.get("origin_amplification")
        text = f"{label} (seed sent {amp:.2f}x)" if amp is not None else label
        (line,) = ax.step(xs, ys, where="post", label=text)
        bound = (s.get("bound") or {}).get("seconds")
        if bound:
            ax.axvline(bound, linestyle="--", linewidth=0.8, color=line.get_color())
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("share of leechers completed" if args.fraction else "leechers completed")
    ax.set_title(args.title)
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
