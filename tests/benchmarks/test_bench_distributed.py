"""benchmarks/bench_distributed.py runs its three configurations and reports what it claims."""
import pathlib

from tinygrad_cnn.testing import load_script

BENCH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_distributed.py"


def test_threads_and_processes_measured(mpi, capsys):
    summary = load_script(BENCH).main(["--no-torch", "--batch-size", "4", "--steps", "1", "--warmup", "1",
                                       "--rounds", "1"])
    assert set(summary) == {("ours", 1, 1), ("ours", 1, 2), ("ours", 2, 1)}
    assert summary[("ours", 1, 1)] == 1.0 and all(v > 0 for v in summary.values())
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("| tinygrad_cnn (MPI) | 2x1 |"))
    no_sync_ms, _, inside_ms = (float(cell) for cell in row.strip("|").split("|")[8:11])
    assert no_sync_ms > 0 and inside_ms >= 0
