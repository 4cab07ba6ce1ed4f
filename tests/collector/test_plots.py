"""The report's figures read right: on a study with conditional and categorical parameters, no axis of the
parallel coordinates repeats a tick label, and the slice plot's colour scale is named for what it shows."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpc_tune.collector.plots import parallel_figure, slice_figure
from hpc_tune.collector.ticks import distinct_labels

SPACE = {
    "lr": FloatDistribution(1e-4, 0.3, log=True),
    "hidden": IntDistribution(16, 256, log=True),
    "optimizer": CategoricalDistribution(["adamw", "sgd"]),
    "momentum": FloatDistribution(0.8, 0.99),  # only under sgd
    "eps": FloatDistribution(1e-9, 1e-6, log=True),  # only under adamw
    "dropout": FloatDistribution(0.0, 0.9),
}


def demo_like_study() -> optuna.Study:
    """As the demo's study came out: two SGD trials whose momentum differs in the fourth digit (the report
    showed 0.879 five times), AdamW trials whose eps differ in the fourth digit, and a dropout that every
    trial has, within a ten-thousandth of 0.5 (matplotlib would move 0.500 into an offset)."""
    rows: list[dict[str, Any]] = [
        {"optimizer": "adamw", "eps": 1.1112e-8},
        {"optimizer": "sgd", "momentum": 0.8793},
        {"optimizer": "adamw", "eps": 1.1135e-8},
        {"optimizer": "sgd", "momentum": 0.8796},
        {"optimizer": "adamw", "eps": 1.1124e-8},
    ]
    study = optuna.create_study(direction="maximize")
    for number, row in enumerate(rows):
        params = {
            "lr": 10 ** (-3 + 0.4 * number),
            "hidden": 16 * (number + 1),
            "dropout": 0.50001 + 1e-5 * number,
        }
        params.update(row)
        state = TrialState.PRUNED if number == 2 else TrialState.COMPLETE
        study.add_trial(
            create_trial(
                state=state,
                value=None if state == TrialState.PRUNED else 0.5 + 0.1 * number,
                params=params,
                distributions={name: SPACE[name] for name in params},
                intermediate_values={1: 0.3},
            )
        )
    return study


def shown_labels(ax: Any) -> list[str]:
    low, high = sorted(ax.get_ylim())
    return [
        label.get_text()
        for tick, label in zip(ax.get_yticks(), ax.get_yticklabels(), strict=True)
        if label.get_text() and low - 1e-12 <= tick <= high + 1e-12
    ]


@pytest.fixture
def figure_of_the_demo() -> Any:
    study = demo_like_study()
    complete = optuna.create_study(direction="maximize")
    complete.add_trials([t for t in study.trials if t.state == TrialState.COMPLETE])
    fig = parallel_figure(complete, sorted({p for t in complete.trials for p in t.params}), "val_acc")
    fig.canvas.draw()
    yield fig
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_no_axis_of_the_parallel_coordinates_repeats_a_tick_label(figure_of_the_demo: Any) -> None:
    axes = [ax for ax in figure_of_the_demo.axes if ax.get_yticklabels()]
    assert len(axes) >= 6  # the objective, six parameters' twin axes and the colour bar
    for ax in axes:
        labels = shown_labels(ax)
        assert len(labels) == len(set(labels)), labels
        assert ax.yaxis.get_offset_text().get_text() == "", labels


def test_a_conditional_axis_still_shows_none_and_the_observed_range(figure_of_the_demo: Any) -> None:
    conditional = [ax for ax in figure_of_the_demo.axes if shown_labels(ax)[:1] == ["None"]]
    assert len(conditional) == 2  # momentum (linear) and eps (log); optimizer has no trial without it
    momentum = next(ax for ax in conditional if float(shown_labels(ax)[-1]) > 0.5)
    eps = next(ax for ax in conditional if ax is not momentum)
    assert float(shown_labels(momentum)[1]) == pytest.approx(0.8793, abs=1e-5)
    assert float(shown_labels(momentum)[-1]) == pytest.approx(0.8796, abs=1e-5)
    assert float(shown_labels(eps)[1]) == pytest.approx(1.1112e-8, rel=1e-3)
    assert float(shown_labels(eps)[-1]) == pytest.approx(1.1124e-8, rel=1e-3)  # trial 2 was pruned


def test_labels_grow_digits_only_until_they_differ() -> None:
    assert distinct_labels([0.8793, 0.879375, 0.87945]) == ["0.8793", "0.87938", "0.87945"]
    assert distinct_labels([0.25, 0.5, 0.75]) == ["0.25", "0.5", "0.75"]
    assert distinct_labels([0.87931, 0.87931]) == ["0.879", "0.879"]  # one value, one label


def test_the_slice_plot_names_its_colour_scale_when_the_copy_renumbers_trials() -> None:
    study = demo_like_study()
    kept = [t for t in study.trials if t.state == TrialState.COMPLETE]
    copy = optuna.create_study(direction="maximize")
    copy.add_trials(kept)
    fig = slice_figure(copy, ["lr", "hidden"], "val_acc", [t.number for t in kept])
    assert "order among the completed trials" in [ax.get_ylabel() for ax in fig.axes]
    # With nothing renumbered (no pruned trial before the last), Optuna's own label is right and stays.
    whole = optuna.create_study(direction="maximize")
    whole.add_trials(kept[:2])
    fig = slice_figure(whole, ["lr"], "val_acc", [0, 1])
    assert "Trial" in [ax.get_ylabel() for ax in fig.axes]
