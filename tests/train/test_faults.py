import pytest

from hpc_tune.errors import ConfigError
from hpc_tune.train.faults import Fault, faults_for_trial, parse_faults


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ("", []),
        ("nan@3", [Fault("nan", 3)]),
        ("oom@2", [Fault("oom", 2)]),
        ("sleep@1:0.5", [Fault("sleep", 1, 0.5)]),
        ("sleep@2:3", [Fault("sleep", 2, 3.0)]),
        ("nan@2#trial=4", [Fault("nan", 2, trial=4)]),
        (" nan@1 , sleep@1:.25#trial=0 ", [Fault("nan", 1), Fault("sleep", 1, 0.25, trial=0)]),
    ],
)
def test_parse_good(value, expected):
    assert parse_faults(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "nan",
        "nan@",
        "nan@x",
        "nan@0",
        "boom@1",
        "sleep@1",
        "nan@1:2",
        "nan@1#trial=",
        "nan@1#trail=2",
        "nan@1,,",
    ],
)
def test_parse_bad(value):
    with pytest.raises(ConfigError) as info:
        parse_faults(value)
    assert info.value.where == "HPCTUNE_FAULT"


def test_sleep_fires_from_its_epoch_on_other_kinds_once():
    assert [Fault("sleep", 2, 1.0).fires_at(e) for e in (1, 2, 3)] == [False, True, True]
    assert [Fault("nan", 2).fires_at(e) for e in (1, 2, 3)] == [False, True, False]


def test_faults_for_trial():
    faults = parse_faults("nan@1#trial=3,oom@2")
    assert faults_for_trial(faults, 3) == faults
    assert faults_for_trial(faults, 4) == [Fault("oom", 2)]
