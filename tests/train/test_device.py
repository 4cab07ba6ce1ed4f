import subprocess
import sys
import textwrap

from hpc_tune.train.device import keep_freed_host_memory

# Page faults per forward pass of the shapes CNN at an eval batch of 256 (channels_last activations of a few
# MiB each), in a fresh process with and without the malloc thresholds. Faults are counted by the kernel, not
# timed, so the figure does not depend on how busy the machine is.
_FAULTS = textwrap.dedent(
    """
    import resource, sys, torch
    from hpc_tune.tasks.shapes_cnn import make_cnn
    from hpc_tune.train.device import keep_freed_host_memory
    if sys.argv[1] == "keep":
        assert keep_freed_host_memory()
    torch.set_num_threads(2)
    model = make_cnn(16).eval().to(memory_format=torch.channels_last)
    x = torch.randn(256, 1, 24, 24).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            model(x)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
    """
)


def _faults_per_pass(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def test_freed_activations_are_reused_instead_of_faulted_in_again():
    assert keep_freed_host_memory()  # glibc, as on every machine the suite runs on
    assert keep_freed_host_memory()  # once per process; asking again is harmless
    as_glibc_would = _faults_per_pass("plain")
    kept = _faults_per_pass("keep")
    assert as_glibc_would > 1000  # the problem: every pass maps its activations in again
    assert kept < as_glibc_would / 4  # mostly none; a few hundred when a thread arena grows
