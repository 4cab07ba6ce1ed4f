import pytest
import torch

from hpc_tune.config import FidelityConfig, ScheduleConfig, TrainConfig
from hpc_tune.errors import NonFiniteLoss, OutOfMemory
from hpc_tune.tasks import digits, shapes_cnn
from hpc_tune.train import engine
from hpc_tune.train.engine import fit
from hpc_tune.train.faults import Fault

OPTIONS = TrainConfig(batch_size=64, compile="off", schedule=ScheduleConfig(type="cosine", warmup_epochs=1))
RECORD_KEYS = {
    "epoch",
    "train_loss",
    "val_loss",
    "val_acc",
    "lr",
    "epoch_time_s",
    "train_samples_per_s",
    "eval_samples_per_s",
}


def _digits(**params):
    # dropout > 0: the resumed run must also restore the RNG that the dropout masks come from
    return digits.build({"hidden": 32, "dropout": 0.2, "lr": 3e-3, **params}, None, 0, OPTIONS)


class Recorder:
    def __init__(self):
        self.records = []

    def __call__(self, record):
        self.records.append(record)


def test_fit_records_every_epoch():
    seen = Recorder()
    result = fit(_digits(), epochs=3, options=OPTIONS, on_epoch=seen)
    assert not result.interrupted and result.epochs_run == 3
    assert [r["epoch"] for r in result.records] == [1, 2, 3] and seen.records == result.records
    assert set(result.records[0]) == RECORD_KEYS
    assert result.records[-1]["val_acc"] > 0.5
    assert result.records[-1]["lr"] < result.records[0]["lr"]


def test_lr_schedule_spans_exactly_the_epochs_run():
    """T_max = epochs of THIS run: reduced-fidelity epochs anneal to 0 by their own last epoch."""
    options = OPTIONS.model_copy(update={"schedule": ScheduleConfig(type="cosine")})
    for epochs in (2, 4):
        result = fit(_digits(), epochs=epochs, options=options, on_epoch=lambda r: None)
        assert result.records[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
        assert all(r["lr"] > 0 for r in result.records[:-1])


def test_reduced_data_fraction_trains_on_fewer_samples_same_val():
    full = digits.build({"hidden": 32}, None, 0, OPTIONS)
    cut = digits.build({"hidden": 32}, FidelityConfig(data_fraction=0.25), 0, OPTIONS)
    assert len(cut.train_set) == pytest.approx(len(full.train_set) / 4, abs=1)
    assert len(cut.val_set) == len(full.val_set)


def test_checkpoint_restore_next_epoch_matches_uninterrupted_run(tmp_path):
    straight = fit(_digits(), epochs=4, options=OPTIONS, on_epoch=lambda r: None)

    path = tmp_path / "trial-0.pt"
    first = Recorder()
    stopped = fit(
        _digits(),
        epochs=4,
        options=OPTIONS,
        on_epoch=first,
        checkpoint_path=path,
        stop_requested=lambda: len(first.records) >= 2,
    )
    assert stopped.interrupted and stopped.epochs_run == 2 and path.is_file()

    second = Recorder()
    resumed = fit(_digits(), epochs=4, options=OPTIONS, on_epoch=second, checkpoint_path=path, resume=True)
    assert not resumed.interrupted
    assert [r["epoch"] for r in resumed.records] == [1, 2, 3, 4]  # every epoch exactly once
    assert [r["epoch"] for r in second.records] == [3, 4]  # restored epochs are not reported again
    for a, b in zip(straight.records, resumed.records, strict=True):
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (a["epoch"], key)


def test_stop_on_last_epoch_just_finishes(tmp_path):
    result = fit(
        _digits(),
        epochs=2,
        options=OPTIONS,
        on_epoch=lambda r: None,
        checkpoint_path=tmp_path / "c.pt",
        stop_requested=lambda: True,
    )
    assert result.epochs_run == 1 and result.interrupted
    result = fit(
        _digits(),
        epochs=1,
        options=OPTIONS,
        on_epoch=lambda r: None,
        checkpoint_path=tmp_path / "d.pt",
        stop_requested=lambda: True,
    )
    assert not result.interrupted and not (tmp_path / "d.pt").exists()


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    result = fit(
        _digits(),
        epochs=2,
        options=OPTIONS,
        on_epoch=lambda r: None,
        checkpoint_path=tmp_path / "missing.pt",
        resume=True,
    )
    assert result.epochs_run == 2


def test_injected_nan_raises_nonfinite_loss():
    seen = Recorder()
    with pytest.raises(NonFiniteLoss) as info:
        fit(_digits(), epochs=4, options=OPTIONS, on_epoch=seen, faults=[Fault("nan", 2)])
    assert info.value.reason == "nonfinite_loss"
    assert [r["epoch"] for r in seen.records] == [1]


def test_diverging_lr_raises_nonfinite_loss():
    with pytest.raises(NonFiniteLoss):
        fit(_digits(lr=1e12, optimizer="sgd"), epochs=3, options=OPTIONS, on_epoch=lambda r: None)


@pytest.fixture
def freed(monkeypatch):
    calls = []
    real = engine.free_memory

    def spy():
        calls.append(1)
        real()

    monkeypatch.setattr(engine, "free_memory", spy)
    return calls


def test_injected_oom_raises_out_of_memory_after_freeing(freed):
    seen = Recorder()
    with pytest.raises(OutOfMemory) as info:
        fit(_digits(), epochs=3, options=OPTIONS, on_epoch=seen, faults=[Fault("oom", 2)])
    assert info.value.reason == "oom" and "simulated" in info.value.detail
    assert freed and len(seen.records) == 1


def test_runtime_error_out_of_memory_is_oom_too(freed):
    parts = _digits()

    class Exploding(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("CUDA error: out of memory")

    parts.model = Exploding()
    parts.make_optimizer = lambda p: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(OutOfMemory):
        fit(parts, epochs=1, options=OPTIONS, on_epoch=lambda r: None)
    assert freed


def test_on_epoch_exception_propagates_after_freeing_memory(freed):
    class Pruned(Exception):
        pass

    def prune(record):
        raise Pruned

    with pytest.raises(Pruned):
        fit(_digits(), epochs=3, options=OPTIONS, on_epoch=prune)
    assert freed


def test_sleep_fault_slows_epochs_from_its_epoch(monkeypatch):
    slept = []
    monkeypatch.setattr(engine.time, "sleep", slept.append)
    fit(_digits(), epochs=3, options=OPTIONS, on_epoch=lambda r: None, faults=[Fault("sleep", 2, 0.25)])
    assert slept == [0.25, 0.25]


def test_gradient_accumulation_matches_the_full_batch():
    no_dropout = {"dropout": 0.0, "optimizer": "sgd", "lr": 0.05}
    whole = fit(_digits(**no_dropout), epochs=2, options=OPTIONS, on_epoch=lambda r: None)
    split = fit(
        _digits(**no_dropout),
        epochs=2,
        options=OPTIONS.model_copy(update={"grad_accum": 4}),
        on_epoch=lambda r: None,
    )
    for a, b in zip(whole.records, split.records, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)


def test_cnn_trains_with_channels_last_and_resumes(tmp_path):
    options = OPTIONS.model_copy(update={"max_val_batches": 2})

    def parts():
        return shapes_cnn.build({"channels": 4, "lr": 1e-2}, FidelityConfig(data_fraction=0.1), 0, options)

    straight = fit(parts(), epochs=2, options=options, on_epoch=lambda r: None)
    path = tmp_path / "cnn.pt"
    fit(
        parts(),
        epochs=2,
        options=options,
        on_epoch=lambda r: None,
        checkpoint_path=path,
        stop_requested=lambda: True,
    )
    resumed = fit(
        parts(), epochs=2, options=options, on_epoch=lambda r: None, checkpoint_path=path, resume=True
    )
    assert straight.records[1]["val_loss"] == pytest.approx(resumed.records[1]["val_loss"], rel=1e-5)
    assert straight.records[0]["eval_samples_per_s"] > 0


NO_SCHEDULE = OPTIONS.model_copy(update={"schedule": ScheduleConfig(type="none")})
HALVED = NO_SCHEDULE.model_copy(update={"val_fraction": 0.5})
SELECT = ("val_acc", "maximize")


def _fit_falling_apart(options, **kwargs):
    """lr 0.3 without a schedule: the net is best after its first epoch and then falls apart, so the last
    epoch's weights and the best epoch's differ."""
    parts = digits.build({"hidden": 16, "lr": 0.3, "optimizer": "sgd"}, None, 0, options)
    return fit(parts, epochs=6, options=options, on_epoch=lambda r: None, select=SELECT, **kwargs)


def test_a_halved_validation_reports_the_whole_sets_value_of_the_final_and_best_weights():
    """Epochs validate on the same stratified half; at the end the last epoch's weights and the weights of
    the epoch the half liked best are validated on the whole set. Validation does not touch training, so a
    run that validates every epoch on the whole set gives the ground truth for both."""
    whole, half = _fit_falling_apart(NO_SCHEDULE), _fit_falling_apart(HALVED)
    assert whole.full_validation == []  # nothing to redo when epochs already saw the whole set
    n_val = len(digits.datasets()[1])
    truth = {r["epoch"]: r["val_acc"] for r in whole.records}
    subset = {r["epoch"]: r["val_acc"] for r in half.records}
    assert subset != truth  # epochs really validated on another sample set
    final = half.full_validation[0]
    assert final["of"] == "final" and final["epoch"] == 6 and final["val_samples"] == n_val
    assert final["val_acc"] == pytest.approx(truth[6], abs=1e-6)
    best_epoch = max(subset, key=lambda e: (subset[e], -e))
    assert best_epoch < 6 and len(half.full_validation) == 2
    best = half.full_validation[1]
    assert best["of"] == "best" and best["epoch"] == best_epoch
    assert best["val_acc"] == pytest.approx(truth[best_epoch], abs=1e-6)
    assert best["val_acc"] > final["val_acc"]


def test_the_best_weights_of_a_halved_validation_survive_a_resume(tmp_path):
    straight = _fit_falling_apart(HALVED)
    path = tmp_path / "ckpt.pt"
    stops = iter([False, False, True])
    _fit_falling_apart(HALVED, checkpoint_path=path, stop_requested=lambda: next(stops))
    resumed = _fit_falling_apart(HALVED, checkpoint_path=path, resume=True)
    kept = [(r["of"], r["epoch"]) for r in straight.full_validation]
    assert kept[1][1] <= 3  # the best epoch was before the hand-on: only the checkpoint still has its weights
    assert [(r["of"], r["epoch"]) for r in resumed.full_validation] == kept
    for a, b in zip(resumed.full_validation, straight.full_validation, strict=True):
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-6)
