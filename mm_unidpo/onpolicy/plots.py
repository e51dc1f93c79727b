"""The pairs summary figure: sample scores, score gaps of the pairs, lengths of chosen vs rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pair_summary_plot(stats: Any, path: Path) -> str | None:
    """Three panels from a `PairStats`; returns the file name, or None when there is nothing to plot."""
    if not stats.sample_scores:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].hist(stats.sample_scores, bins=20, color="#4878d0")
    axes[0].set(title=f"sample scores ({len(stats.sample_scores)})", xlabel="score", ylabel="samples")
    if stats.gaps:
        axes[1].hist(stats.gaps, bins=20, color="#ee854a")
        lengths = stats.chosen_lengths + stats.rejected_lengths
        top = max(lengths) + 1
        axes[2].scatter(stats.rejected_lengths, stats.chosen_lengths, s=8, alpha=0.5, color="#6acc64")
        axes[2].plot([0, top], [0, top], color="grey", linewidth=0.8)
    axes[1].set(title=f"score gap of the pairs ({stats.pairs})", xlabel="score chosen − rejected", ylabel="pairs")
    axes[2].set(title="length (words)", xlabel="rejected", ylabel="chosen")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
