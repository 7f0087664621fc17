"""Tests of the GPU benchmark suite (benchmarks/gpu_suite.sh, benchmarks/gpu_suite.py) on CPU.

The module runs `bash benchmarks/gpu_suite.sh --cpu` once (every row of `gpu_suite.ROWS` on
tiny shapes, XLA's fast-compile flags): about 35 s of CPU time, most of it XLA compiling
five train steps and two samplers. The other tests check the trace summary on synthetic
Chrome-trace events, the peak table, and the failure / time-budget paths of the driver
with rows that compile nothing.
"""
import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks import gpu_suite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Rows that cannot run on a CPU, or not yet at all.
NOT_AVAILABLE = {
    "train/talking_faces/cudnn/dots": "cuDNN flash attention needs a GPU",
    "train/talking_faces/cudnn/none": "cuDNN flash attention needs a GPU",
    "train/talking_faces/cudnn/full": "cuDNN flash attention needs a GPU",
    "sample/256px/latent": "no latent autoencoder yet",
    "autoencoder/encode_decode": "no latent autoencoder yet",
}


def _table_rows(markdown):
  """The cells of each body line of the (single) Markdown table."""
  lines = [line for line in markdown.splitlines() if line.startswith("| ")]
  return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  """(output folder, results.json) of one `gpu_suite.sh --cpu` run."""
  out = tmp_path_factory.mktemp("gpu_suite")
  proc = subprocess.run(
      # No time budget: on a slow machine the rows must still run, not be skipped.
      ["bash", os.path.join(REPO, "benchmarks", "gpu_suite.sh"), "--cpu", "--total_s", "86400",
       "--out", str(out)],
      env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  with open(out / "results.json") as f:
    return out, json.load(f)


def test_smoke_writes_one_table_row_per_registered_benchmark(smoke):
  out, results = smoke
  assert {"results.md", "results.json", "profile_top_ops.md"} <= set(os.listdir(out))
  markdown = (out / "results.md").read_text()
  assert "CPU smoke" in markdown and "measured CPU matmul ceiling" in markdown
  assert f"jax {results['environment']['jax']}" in markdown
  assert [cells[0] for cells in _table_rows(markdown)] == list(gpu_suite.ROWS)
  assert [r["row"] for r in results["rows"]] == list(gpu_suite.ROWS)


def test_missing_features_say_not_available_and_the_rest_ran(smoke):
  out, results = smoke
  status = {r["row"]: r["status"] for r in results["rows"]}
  assert {row for row, s in status.items() if s == "not available"} == set(NOT_AVAILABLE)
  assert all(s == "ok" for row, s in status.items() if row not in NOT_AVAILABLE), status
  lines = {cells[0]: cells for cells in _table_rows((out / "results.md").read_text())}
  for row, reason in NOT_AVAILABLE.items():
    assert lines[row][-1].startswith(f"not available: {reason}"), lines[row]


def test_measured_numbers_are_positive_and_mfu_is_achieved_over_peak(smoke):
  out, results = smoke
  lines = {cells[0]: cells for cells in _table_rows((out / "results.md").read_text())}
  measured = [r for r in results["rows"] if r["status"] == "ok"]
  assert len(measured) == len(gpu_suite.ROWS) - len(NOT_AVAILABLE)
  for r in measured:
    for key in ("seconds", "compile_seconds", "flops", "flop_per_s", "peak_flop_per_s", "mfu",
                "ceiling_flop_per_s", "ratio_to_ceiling", "peak_bytes"):
      assert math.isfinite(r[key]) and r[key] > 0, (r["row"], key, r[key])
    assert math.isclose(r["flop_per_s"], r["flops"] / r["seconds"], rel_tol=1e-9)
    assert math.isclose(r["mfu"], r["flop_per_s"] / r["peak_flop_per_s"], rel_tol=1e-9)
    assert math.isclose(r["ratio_to_ceiling"], r["flop_per_s"] / r["ceiling_flop_per_s"],
                        rel_tol=1e-9)
    # No datasheet peak on a CPU: the peak is the row's measured ceiling.
    assert r["peak_flop_per_s"] == r["ceiling_flop_per_s"]
    assert lines[r["row"]][6] == f"{100 * r['mfu']:.1f}%"


def test_sampling_rows_report_nfe_and_video_seconds_per_second(smoke):
  _, results = smoke
  rows = {r["row"]: r for r in results["rows"]}
  for name, batch in (("sample/64px/b1", 1), ("sample/64px/b8", 8)):
    r = rows[name]
    assert r["nfe"] == gpu_suite.SMOKE_SAMPLER_STEPS
    assert math.isclose(r["video_seconds"], batch * gpu_suite.SMOKE_DATA["num_frames"] / 25)
    assert math.isclose(r["video_seconds_per_second"], r["video_seconds"] / r["seconds"])
  # The guided denoiser's FLOPs scale with the batch (one model call on batch 3B).
  assert math.isclose(rows["sample/64px/b8"]["flops"], 8 * rows["sample/64px/b1"]["flops"],
                      rel_tol=0.05)


def test_profile_summary_lists_ops_with_positive_time(smoke):
  out, results = smoke
  profile = results["profile"]
  assert profile["row"] == "train/talking_faces/xla/dots"
  assert profile["steps"] == gpu_suite.PROFILE_STEPS
  ops = profile["ops"]
  assert ops and ops[0]["total_ms"] > 0
  assert max(op["calls"] for op in ops) >= profile["steps"]
  assert [op["total_ms"] for op in ops] == sorted((op["total_ms"] for op in ops), reverse=True)
  assert sum(op["total_ms"] for op in ops) <= profile["total_ms"] * (1 + 1e-9)
  markdown = (out / "profile_top_ops.md").read_text()
  first = _table_rows(markdown)[0]
  assert first[:2] == ["1", ops[0]["op"]] and float(first[4]) > 0


def _events(process_name, thread_name, spans, pid=1, tid=7):
  """Chrome-trace events: a named process and thread, and ('X') spans (name, ts, dur, args)."""
  return [{"ph": "M", "pid": pid, "name": "process_name", "args": {"name": process_name}},
          {"ph": "M", "pid": pid, "tid": tid, "name": "thread_name",
           "args": {"name": thread_name}}] + [
              {"ph": "X", "pid": pid, "tid": tid, "name": name, "ts": ts, "dur": dur,
               "args": args} for name, ts, dur, args in spans]


def test_top_ops_prefers_the_device_xla_ops_line_and_uses_exclusive_time():
  host = _events("/host:CPU", "python", [("fusion.9", 0, 500, {"hlo_op": "fusion.9"})])
  ops_line = _events("/device:GPU:0", "XLA Ops", [
      ("while.1", 0.0, 100.0, {}), ("fusion.2", 10.0, 60.0, {}), ("fusion.3", 80.0, 10.0, {}),
      ("fusion.2", 200.0, 20.0, {"hlo_module": "jit_step"})], pid=2)
  stream = _events("/device:GPU:0", "Stream #13", [
      ("kernel_a", 10.0, 60.0, {"hlo_op": "fusion.2"})], pid=2, tid=8)
  ops, total_ms = gpu_suite.top_ops(host + ops_line + stream, top=2)
  assert [(op["op"], op["calls"]) for op in ops] == [("fusion.2", 2), ("while.1", 1)]
  assert math.isclose(ops[0]["total_ms"], 0.08) and math.isclose(ops[1]["total_ms"], 0.03)
  assert math.isclose(total_ms, 0.12)


def test_top_ops_falls_back_to_hlo_op_args_and_fails_without_op_events():
  cpu = _events("/host:CPU", "tf_XLAPjRtCpuClient", [
      ("ynn_fusion", 0.0, 30.0, {"hlo_op": "ynn_fusion", "hlo_module": "jit_f"}),
      ("end: ynn_fusion", 30.0, 1.0, {}), ("dot.4", 40.0, 50.0, {"hlo_op": "dot.4"})])
  ops, total_ms = gpu_suite.top_ops(cpu, top=5)
  assert [op["op"] for op in ops] == ["dot.4", "ynn_fusion"]
  assert ops[1]["module"] == "jit_f" and math.isclose(total_ms, 0.08)
  with pytest.raises(ValueError, match="no XLA op events"):
    gpu_suite.top_ops(_events("/host:CPU", "python", [("PjitFunction", 0.0, 5.0, {})]), top=5)


@pytest.mark.parametrize("kind, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("cpu", None)])
def test_device_peak(kind, tflops):
  peak = gpu_suite.device_peak(kind)
  assert peak == (None if tflops is None else tflops * 1e12)


def test_failing_row_is_reported_and_budget_skips_later_rows(tmp_path, monkeypatch):
  monkeypatch.setitem(gpu_suite.ROWS, "boom", gpu_suite.Row("raises", lambda suite, p: 1 / 0))
  run = gpu_suite.main(["--cpu", "--out", str(tmp_path / "a"),
                        "--rows", "boom,sample/256px/latent"])
  assert [(r["status"], r["reason"].split(" (")[0]) for r in run["rows"]] == [
      ("failed", "ZeroDivisionError: division by zero"),
      ("not available", "no latent autoencoder yet")]
  assert "failed: ZeroDivisionError" in (tmp_path / "a" / "results.md").read_text()
  run = gpu_suite.main(["--cpu", "--out", str(tmp_path / "b"), "--budget_s", "0",
                        "--rows", "train/talking_faces/xla/dots,sample/64px/b1"])
  assert [r["status"] for r in run["rows"]] == ["skipped", "skipped"]
  assert "No profile" in (tmp_path / "b" / "profile_top_ops.md").read_text()


def test_unknown_row_names_are_rejected(tmp_path):
  with pytest.raises(SystemExit):
    gpu_suite.main(["--cpu", "--out", str(tmp_path), "--rows", "train/huge"])
