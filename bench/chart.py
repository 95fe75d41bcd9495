#!/usr/bin/env python3
"""Chart of a wasmtp-bench run: msgs/s and server CPU per message for every
peer in every mode (medians over the runs, smtp-source load; the pipelined
mode uses the Rust generator's figures).

usage: chart.py RESULTS.json OUT.png
"""
import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PEERS = [
    ("wasmtp-empty", "wasmtp, empty plugin (floor: no wasm call)"),
    ("wasmtp-sink", "wasmtp -c sink"),
    ("wasmtp-debugging", "wasmtp -c debugging"),
    ("wasmtp-mailbox", "wasmtp -c mailbox"),
    ("smtp-sink", "Postfix smtp-sink"),
    ("aiosmtpd", "aiosmtpd 1.4.6 Sink"),
]
COLORS = ["#9ecae1", "#3182bd", "#6baed6", "#08519c", "#e6550d", "#31a354"]


def mode_label(m):
    conn = "reused" if m["reuse"] else "conn/msg"
    size = f'{m["size"] >> 20} MiB' if m["size"] >= 1 << 20 else f'{m["size"] >> 10} KiB'
    label = f'{conn}\n{size}, {m["sessions"]} sess.'
    label += "\npipelined" if m["pipeline"] else ""
    return label + ("\npinned" if m.get("pinned") else "")


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(src) as f:
        r = json.load(f)
    modes = r["modes"]
    present = sorted({c["mode"] for c in r["cells"]})
    fig, axes = plt.subplots(2, 1, figsize=(15, 9.5), sharex=True)
    width = 0.8 / len(PEERS)
    for p, (peer, label) in enumerate(PEERS):
        rates, cpus = [], []
        for m in present:
            key = "ours" if modes[m]["pipeline"] else "source"
            cells = [c for c in r["cells"] if c["mode"] == m and c["peer"] == peer and not c.get("error") and c.get(key)]
            rates.append(statistics.median([c[key]["msgs_per_s"] for c in cells]) if cells else 0)
            cpus.append(statistics.median([c[key]["cpu_us_per_msg"] for c in cells]) if cells else 0)
        xs = [i + (p - (len(PEERS) - 1) / 2) * width for i in range(len(present))]
        axes[0].bar(xs, rates, width, label=label, color=COLORS[p])
        axes[1].bar(xs, cpus, width, label=label, color=COLORS[p])
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].set_ylabel("messages / s (higher is better)")
    axes[1].set_ylabel("server CPU µs / message (lower is better)")
    axes[0].set_title(f'wasmtp benchmark — {r["machine"]} — {r["started"]} — medians')
    axes[1].set_xticks(range(len(present)))
    axes[1].set_xticklabels([mode_label(modes[m]) for m in present], fontsize=8)
    for ax in axes:
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=3, loc="upper right")
    fig.text(0.01, 0.005, "smtp-source load; the pipelined mode: the Rust load generator. Log scales.", fontsize=8)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(out, dpi=110)
    print(f"[bench] chart: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
