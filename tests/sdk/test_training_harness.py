"""The shared training harness: budget, curve, settings, seeding, the loop, DeepSpeed (CPU, gloo) and the
multi-GPU launcher command. The DeepSpeed tests run in a subprocess: a process group and its environment
variables must not leak into the rest of the test session."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from kubevolve.sdk.training import (
    Budget,
    Curve,
    SettingsError,
    StepOutput,
    TorchStepper,
    TrainingDiverged,
    load_settings,
    seed_everything,
    select_device,
    train,
    warmup_cosine,
)
from kubevolve.sdk.training.launcher import NodeLayout, launch_command, node_layout, run_launched
from kubevolve.sdk.training.zero import deepspeed_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- budget, curve, settings, schedule ----------------------------------------------------------------
def test_budget_stops_at_steps_or_tokens_and_schedules_evaluations():
    budget = Budget(max_steps=10, max_tokens=1000, eval_every=4)
    assert not budget.exhausted(9, 999)
    assert budget.exhausted(10, 0) and budget.exhausted(3, 1000)
    assert [s for s in range(1, 11) if budget.should_eval(s)] == [4, 8]
    assert not Budget(5).should_eval(5)  # eval_every 0: only the end of training (the loop's job)
    for bad in ({"max_steps": 0}, {"max_steps": 1, "max_tokens": 0}, {"max_steps": 1, "eval_every": -1}):
        with pytest.raises(ValueError):
            Budget(**bad)


def test_curve_renders_a_thinned_table_with_first_and_last_rows():
    curve = Curve()
    for step in range(1, 101):
        curve.add(step, step * 10, step / 10, loss=1.0 / step)
    curve.add(100, 1000, 10.0, eval_acc=0.5)
    assert curve.last("loss") == pytest.approx(0.01) and curve.last("eval_acc") == 0.5
    assert curve.last("missing") is None
    assert curve.series("eval_acc") == [(100.0, 0.5)]
    text = curve.to_text("demo", max_rows=10)
    lines = text.splitlines()
    assert lines[0] == "demo (101 rows, 10 shown)"
    assert lines[1].split() == ["step", "tokens", "seconds", "loss", "eval_acc"]
    assert lines[2].split()[0] == "1" and lines[-1].split()[-1] == "0.5000"
    assert len(lines) == 12
    assert Curve().to_text("empty") == "empty: no steps logged"


def test_settings_merge_stage_over_defaults_key_by_key(tmp_path):
    path = tmp_path / "training.yaml"
    path.write_text(
        "defaults: {seed: 1, model: {dim: 64, layers: 2}}\n"
        "stages: {quick: {}, full: {model: {dim: 256}, steps: 9}}\n"
        "deepspeed: {zero_optimization: {stage: 3}}\n"
    )
    quick, full = load_settings(path, "quick"), load_settings(path, "full")
    assert quick == {
        "seed": 1,
        "model": {"dim": 64, "layers": 2},
        "deepspeed": {"zero_optimization": {"stage": 3}},
    }
    assert full["model"] == {"dim": 256, "layers": 2} and full["steps"] == 9 and full["seed"] == 1
    with pytest.raises(SettingsError, match="no settings for stage 'medium'"):
        load_settings(path, "medium")
    path.write_text("stages: {quick: {}}\nextra: 1\n")
    with pytest.raises(SettingsError, match="unknown top-level field"):
        load_settings(path, "quick")


def test_warmup_cosine_rises_then_decays_to_the_floor():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=100, warmup_fraction=0.1, floor=0.1)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


# ---- device and seeding -------------------------------------------------------------------------------
def test_device_selection():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device().type == expected
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            select_device("cuda")


def test_seed_everything_makes_python_numpy_and_torch_reproducible():
    def draws(seed):
        generator = seed_everything(seed)
        return (
            random.random(),
            float(np.random.rand()),
            float(torch.rand(1)),
            float(torch.rand(1, generator=generator)),
        )

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.utils.deterministic.fill_uninitialized_memory  # costs seconds per DeepSpeed step


# ---- the loop ------------------------------------------------------------------------------------------
def regression_run(seed: int, steps: int = 60) -> tuple[list[float], dict[str, float], object]:
    generator = seed_everything(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    stepper = TorchStepper(model, torch.optim.AdamW(model.parameters(), lr=1e-2), grad_clip=1.0)
    weights = torch.randn(8, 1, generator=generator)
    test_x = torch.randn(256, 8, generator=torch.Generator().manual_seed(99))

    def step_fn(step):
        x = torch.randn(16, 8, generator=generator)
        return StepOutput(
            ((stepper.model(x) - x @ weights) ** 2).mean(), tokens=16, logs={"step_mod": step % 2}
        )

    def evaluate():
        assert not model.training and not torch.is_grad_enabled()
        return {"mse": ((stepper.model(test_x) - test_x @ weights) ** 2).mean()}

    result = train(stepper, step_fn, Budget(steps, eval_every=20), evaluate=evaluate, log_every=5)
    return [row["loss"] for row in result.curve.rows if "loss" in row], result.final_eval, result


def test_loop_trains_logs_a_curve_and_evaluates_on_schedule():
    losses, final, result = regression_run(0)
    assert result.steps == 60 and result.tokens == 960
    assert losses[-1] < losses[0] / 2
    evals = result.curve.series("eval_mse")
    assert [step for step, _ in evals] == [20.0, 40.0, 60.0]
    assert final["mse"] == evals[-1][1] and evals[-1][1] < evals[0][1]
    assert result.tokens_per_second > 0 and result.train_seconds > 0
    assert result.final_loss == pytest.approx(losses[-1])
    assert {"lr", "grad_norm", "step_mod"} <= set(result.curve.columns())


def test_same_seed_same_run_and_different_seed_different_run():
    first, second, other = regression_run(5), regression_run(5), regression_run(6)
    assert first[0] == second[0] and first[1] == second[1]
    assert first[0] != other[0]


def test_a_nan_loss_stops_training_with_the_step_named():
    model = torch.nn.Linear(2, 1)
    stepper = TorchStepper(model, torch.optim.SGD(model.parameters(), lr=0.1))

    def step_fn(step):
        loss = model(torch.ones(1, 2)).sum()
        return StepOutput(loss * math.nan if step == 7 else loss)

    with pytest.raises(TrainingDiverged, match="the loss is nan at step 7"):
        train(stepper, step_fn, Budget(20))


def test_token_budget_ends_training_before_the_step_budget():
    model = torch.nn.Linear(2, 1)
    stepper = TorchStepper(model, torch.optim.SGD(model.parameters(), lr=0.1))
    result = train(
        stepper, lambda step: StepOutput(model(torch.ones(1, 2)).sum() ** 2, tokens=100), Budget(50, 450)
    )
    assert result.steps == 5 and result.tokens == 500


# ---- DeepSpeed -----------------------------------------------------------------------------------------
def test_deepspeed_config_is_completed_from_the_task_section():
    section = {"zero_optimization": {"stage": 2}, "bf16": {"enabled": "auto"}}
    config = deepspeed_config(section, micro_batch=16, device=torch.device("cpu"), grad_clip=1.0)
    assert config["train_micro_batch_size_per_gpu"] == 16 and config["gradient_accumulation_steps"] == 1
    assert config["bf16"]["enabled"] is False  # no half precision on the CPU
    assert config["gradient_clipping"] == 1.0
    assert section["bf16"]["enabled"] == "auto"  # the task's section is not modified
    assert (
        deepspeed_config(None, micro_batch=1, device=torch.device("cpu"))["zero_optimization"]["stage"] == 2
    )
    with pytest.raises(ValueError, match="stage must be 0, 1, 2 or 3"):
        deepspeed_config({"zero_optimization": {"stage": 4}}, micro_batch=1, device=torch.device("cpu"))


DEEPSPEED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, torch
    from kubevolve.sdk.training import Budget, StepOutput, build_stepper, seed_everything, train, training_device
    from kubevolve.sdk.training import distributed

    engine, stage = sys.argv[1], int(sys.argv[2])
    generator = seed_everything(0)
    device = training_device(engine, "cpu")
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    stepper = build_stepper(model, optimizer, engine=engine, device=device, micro_batch=16, grad_clip=1.0,
                            deepspeed_section={"zero_optimization": {"stage": stage}})
    weights = torch.randn(8, 1, generator=generator)
    test_x = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))

    def step_fn(step):
        x = torch.randn(16, 8, generator=generator)
        return StepOutput(((stepper.model(x) - x @ weights) ** 2).mean(), tokens=16)

    result = train(stepper, step_fn, Budget(40, eval_every=20),
                   evaluate=lambda: {"mse": ((stepper.model(test_x) - test_x @ weights) ** 2).mean()})
    report = {"type": type(stepper).__name__, "engine": type(getattr(stepper, "engine", None)).__name__,
              "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
              "world": os.environ.get("WORLD_SIZE"), "losses": [r["loss"] for r in result.curve.rows if "loss" in r],
              "mse": result.final_eval["mse"]}
    with open(f"result-{engine}-rank{os.environ.get('RANK', '0')}.json", "w") as out:  # ranks share stdout
        json.dump(report, out)
    distributed.shutdown()
    """
)


def run_script(tmp_path: Path, *args: str, timeout: float = 240) -> dict:
    script = tmp_path / "train_ds.py"
    script.write_text(DEEPSPEED_SCRIPT)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / f"result-{args[0]}-rank0.json").read_text())


def test_deepspeed_zero_trains_on_cpu_with_gloo_through_the_same_loop(tmp_path):
    """The harness's DeepSpeed path: init_distributed(gloo) with a one-process rendezvous, deepspeed.initialize
    with ZeRO stage 2, and the same loop and step function as the plain torch path, which it matches."""
    pytest.importorskip("deepspeed")
    ds = run_script(tmp_path, "deepspeed", "2")
    plain = run_script(tmp_path, "torch", "0")
    assert ds["type"] == "DeepSpeedStepper" and ds["engine"] == "DeepSpeedEngine"
    assert ds["backend"] == "gloo" and ds["world"] == "1"
    assert plain["type"] == "TorchStepper" and plain["backend"] is None
    assert ds["losses"][-1] < ds["losses"][0] / 2
    assert ds["losses"] == pytest.approx(plain["losses"], rel=1e-4)  # the same math, whatever runs it
    assert ds["mse"] == pytest.approx(plain["mse"], rel=1e-4)


@pytest.mark.slow
def test_two_ranks_train_with_zero_through_torchrun_on_cpu(tmp_path):
    """What several GPUs do, on two CPU processes: torchrun starts both, each joins the gloo group,
    ZeRO-2 partitions the optimizer state between them."""
    pytest.importorskip("deepspeed")
    script = tmp_path / "train_ds.py"
    script.write_text(DEEPSPEED_SCRIPT)
    from kubevolve.sdk.training.distributed import free_port

    command = launch_command(
        [str(script), "deepspeed", "2"], gpus=2, launcher="torchrun", master_port=free_port()
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"result-deepspeed-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(results) == 2 and all(r["world"] == "2" and r["backend"] == "gloo" for r in results)
    assert results[0]["losses"][-1] < results[0]["losses"][0]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("mpirun") is None, reason="OpenMPI's mpirun is not installed (apt-get install openmpi-bin)"
)
def test_two_ranks_train_with_zero_through_mpirun_on_cpu(tmp_path):
    """What a multi-node TrainJob does, on one host: mpirun starts two ranks from a hostfile, each takes its
    rank from OpenMPI's variables (no mpi4py), joins the gloo group at the address the command passes."""
    pytest.importorskip("deepspeed")
    script = tmp_path / "train_ds.py"
    script.write_text(DEEPSPEED_SCRIPT)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    from kubevolve.sdk.training.distributed import free_port

    command = launch_command(
        [str(script), "deepspeed", "2"],
        gpus=2,
        launcher="mpirun",
        hostfile=str(hostfile),
        master_port=free_port(),
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env |= {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_plm": "isolated"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = [json.loads((tmp_path / f"result-deepspeed-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(results) == 2 and all(r["world"] == "2" and r["backend"] == "gloo" for r in results)
    assert results[0]["losses"][-1] < results[0]["losses"][0]


# ---- the launcher ---------------------------------------------------------------------------------------
def test_launch_commands_for_deepspeed_and_torchrun():
    py = "/py"
    assert launch_command(["train.py", "--x", "1"], gpus=8, master_port=2950, python=py) == [
        py,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        "8",
        "--master_port",
        "2950",
        "train.py",
        "--x",
        "1",
    ]
    multi = launch_command(["pkg.train"], gpus=4, nodes=2, hostfile="/etc/hosts.ds", module=True, python=py)
    assert multi[3:] == [
        "--num_gpus",
        "4",
        "--num_nodes",
        "2",
        "--hostfile",
        "/etc/hosts.ds",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        "29500",
        "--module",
        "pkg.train",
    ]
    torchrun = launch_command(
        ["train.py"], gpus=2, launcher="torchrun", nodes=2, node_rank=1, master_addr="10.0.0.1", python=py
    )
    assert torchrun == [
        py,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--nnodes",
        "2",
        "--node_rank",
        "1",
        "--master_addr",
        "10.0.0.1",
        "--master_port",
        "29500",
        "train.py",
    ]
    with pytest.raises(ValueError, match="needs a hostfile"):
        launch_command(["t.py"], gpus=1, nodes=2)
    with pytest.raises(ValueError, match="unknown launcher"):
        launch_command(["t.py"], gpus=1, launcher="srun")
    mpirun = launch_command(
        ["t.py"],
        gpus=8,
        nodes=2,
        launcher="mpirun",
        hostfile="/etc/mpi/hostfile",
        master_addr="n0",
        python=py,
    )
    assert mpirun[:8] == [
        "mpirun",
        "-n",
        "16",
        "--hostfile",
        "/etc/mpi/hostfile",
        "--map-by",
        "ppr:8:node",
        "-x",
    ]
    assert "MASTER_ADDR=n0" in mpirun and "MASTER_PORT=29500" in mpirun and mpirun[-3:] == [py, "-u", "t.py"]
    with pytest.raises(ValueError, match="needs a hostfile"):
        launch_command(["t.py"], gpus=1, launcher="mpirun")
    with pytest.raises(ValueError, match="at least 1"):
        launch_command(["t.py"], gpus=0)


def test_run_launched_reads_rank_zeros_result_and_names_failures(tmp_path):
    out = tmp_path / "metrics.json"
    write = f"import json; json.dump({{'score': 0.5}}, open({str(out)!r}, 'w'))"
    assert run_launched([sys.executable, "-c", write], out) == {"score": 0.5}
    with pytest.raises(RuntimeError, match="exit status 3:\n.*boom"):
        run_launched([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], out)
    with pytest.raises(RuntimeError, match="no rank wrote a result"):
        run_launched([sys.executable, "-c", "pass"], out)


def test_importing_the_harness_neither_imports_deepspeed_nor_computes(tmp_path):
    """Evaluators import the harness in a warm worker that forks per candidate: no DeepSpeed import (slow,
    probes accelerators), no torch computation, no OpenMP pool before the fork."""
    code = (
        "import sys, torch; before = torch.get_num_threads();"
        "import kubevolve.sdk.training, kubevolve.sdk.training.launcher, kubevolve.sdk.training.factory;"
        "print('deepspeed' in sys.modules, torch.get_num_threads() == before)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "True"], proc.stderr


def test_node_layout_from_the_operator_and_the_mpi_hostfile(tmp_path):
    """A TrainJob's launcher pod: KUBEVOLVE_NUM_NODES from the operator, the hosts from Trainer's hostfile."""
    assert node_layout({}) == NodeLayout() == node_layout({"KUBEVOLVE_NUM_NODES": "1"})
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(
        "# written by the MPI runtime\nrun-node-0-0.run slots=8\n\nrun-node-0-1.run slots=8\n"
    )
    layout = node_layout({"KUBEVOLVE_NUM_NODES": "2", "KUBEVOLVE_HOSTFILE": str(hostfile)})
    assert layout == NodeLayout(2, str(hostfile), "run-node-0-0.run")
    with pytest.raises(ValueError, match="lists 2"):
        node_layout({"KUBEVOLVE_NUM_NODES": "3", "KUBEVOLVE_HOSTFILE": str(hostfile)})
    with pytest.raises(ValueError, match="cannot be read"):
        node_layout({"KUBEVOLVE_NUM_NODES": "2", "KUBEVOLVE_HOSTFILE": str(tmp_path / "none")})
    with pytest.raises(ValueError, match="KUBEVOLVE_NUM_NODES='two'"):
        node_layout({"KUBEVOLVE_NUM_NODES": "two"})


@pytest.fixture
def one_rank_group():
    """A joined one-process gloo group, left afterwards."""
    from kubevolve.sdk.training.distributed import free_port, shutdown

    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    yield
    shutdown()


def test_from_launcher_host_sends_the_files_and_refuses_what_it_cannot(one_rank_group, tmp_path, monkeypatch):
    """The files a launch shares with its ranks come from the rank that can read them; where none can (the
    launcher's host missing from the hostfile), or they are over the bound, every rank stops with the reason."""
    from kubevolve.sdk.training import distributed

    (tmp_path / "program.py").write_text("x = 1\n")
    (tmp_path / "settings.json").write_text("{}")
    names = ("program.py", "settings.json")
    assert distributed.from_launcher_host(tmp_path, names) == (
        0,
        {"program.py": b"x = 1\n", "settings.json": b"{}"},
    )
    with pytest.raises(
        RuntimeError,
        match=r"no rank can read program.py, missing.json in .*own host, where at least one rank",
    ):
        distributed.from_launcher_host(tmp_path, ("program.py", "missing.json"))
    monkeypatch.setattr(distributed, "MAX_SHARED_BYTES", 7)
    with pytest.raises(RuntimeError, match="too large: 8 bytes, over 7"):
        distributed.from_launcher_host(tmp_path, names)
