"""The untrusted half of linear_attention's evaluation: runs in the candidate's sandboxed process, with the
candidate's TokenMixer, and answers the judge's requests with data. Nothing it says is a metric: the judge
(evaluate.py) draws the held-out inputs from a seed this process never learns, keeps their answers, and
computes the accuracy, the loss and the probes' verdicts from the outputs and the times it measures itself.

Requests (`op`):
- `check`: the static checks of mixer_checks.py (interface, causality, the FLOP-counting complexity probe), a
  cheap first filter before training; the report is the candidate's claim, the judge's probes decide.
- `mixer`: a fresh TokenMixer (eval mode, seeded) applied to the inputs the judge sent: its outputs.
- `time`: the same mixer on one random sequence of `length` tokens: a checksum (the judge times the request).
- `train`: train the MQAR model and the LM (trainer.py), keep them in this process; return the curves.
  With several GPUs (`launcher` in training.yaml) or nodes (mpirun) the ranks run this file with
  `--rank-entry`, take the program and settings from a rank on this host, train with DeepSpeed, and that
  rank saves both models, which this process loads.
- `predict`: a trained model's logits on the inputs the judge sent, at the positions it names.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import mixer_checks
import numpy as np
import torch
import trainer

from kubevolve.sdk.training import distributed as dist_env
from kubevolve.sdk.training import select_device, set_threads, training_device
from kubevolve.sdk.training.launcher import launch_command, node_layout, run_launched

EVAL_BATCH = 64  # rows per forward pass when predicting
_trained: dict[str, trainer.Trained] = {}  # "mqar", "lm": this process's trained models
_probe_mixer: dict[tuple[int, int, int], torch.nn.Module] = {}
_probe_inputs: dict[tuple[int, int, int], torch.Tensor] = {}


def run(program, request: dict) -> Any:
    op = request.get("op")
    if op == "predict":
        return predict(request)
    settings = request["settings"]
    require_device(settings)
    set_threads(settings["threads"])
    if op == "check":
        model = settings["model"]
        report = mixer_checks.run_checks(program.TokenMixer, model["dim"], model["heads"], settings["seed"])
        return {
            "parameters": report.parameters,
            "cost_exponent": report.cost_exponent,
            "summary": report.summary,
        }
    if op == "mixer":
        return mixer_outputs(program, settings, request)
    if op == "time":
        return time_forward(program, settings, request)
    if op == "train":
        return train(program, settings)
    raise ValueError(f"unknown request {op!r}")


def require_device(settings: dict[str, Any]) -> None:
    if settings.get("requireGpu") and not torch.cuda.is_available():
        raise RuntimeError(
            "the full stage is sized for a GPU and none is visible; run the quick stage only on a CPU "
            "(stages: [quick], as tasks/linear_attention/demo.yaml does) or run on a GPU node"
        )


# --- the judge's probes: a fresh mixer -------------------------------------------------------------------


def probe_mixer(program, settings: dict[str, Any], seed: int) -> torch.nn.Module:
    """A fresh TokenMixer of the stage's width, in eval mode, the same one for every probe request."""
    dim, heads = settings["model"]["dim"], settings["model"]["heads"]
    key = (seed, dim, heads)
    if key not in _probe_mixer:
        torch.manual_seed(seed)
        mixer = mixer_checks.build(program.TokenMixer, dim, heads)
        _probe_mixer[key] = mixer.to(select_device(settings.get("device"))).eval()
    return _probe_mixer[key]


def mixer_outputs(program, settings: dict[str, Any], request: dict) -> dict[str, np.ndarray]:
    mixer = probe_mixer(program, settings, int(request["seed"]))
    device = next(mixer.parameters()).device
    inputs = torch.from_numpy(np.asarray(request["inputs"], dtype=np.float32)).to(device)
    with torch.no_grad():
        outputs = mixer(inputs)
    return {"outputs": outputs.detach().float().cpu().numpy()}


def time_forward(program, settings: dict[str, Any], request: dict) -> dict[str, float]:
    """One forward pass of one sequence of `length` tokens (the input is made once per length and kept)."""
    mixer = probe_mixer(program, settings, int(request["seed"]))
    dim, length = settings["model"]["dim"], int(request["length"])
    key = (int(request["seed"]), length, dim)
    if key not in _probe_inputs:
        generator = torch.Generator().manual_seed(key[0])
        _probe_inputs[key] = torch.randn(1, length, dim, generator=generator).to(
            next(mixer.parameters()).device
        )
    with torch.no_grad():
        outputs = mixer(_probe_inputs[key])
    return {"checksum": float(outputs.float().abs().mean())}  # .item() waits for a GPU to finish


# --- training and predictions --------------------------------------------------------------------------------


def train(program, settings: dict[str, Any]) -> dict[str, Any]:
    _trained.clear()
    if settings.get("launcher") and (torch.cuda.device_count() > 1 or requested_nodes() > 1):
        trained, world_size = train_on_all_gpus(program, settings)
        _trained.update(trained)
    else:
        engine = settings["engine"]
        device = training_device(engine, settings.get("device"))
        _trained["mqar"] = trainer.train_mqar(program.TokenMixer, settings, device, engine)
        _trained["lm"] = trainer.train_lm(program.TokenMixer, settings, device, engine)
        world_size = dist_env.world_size()
    return {"world_size": world_size, **{name: model.info for name, model in _trained.items()}}


def predict(request: dict) -> dict[str, np.ndarray]:
    """Logits of the trained model `request["task"]` on `inputs` (N, T) token ids, at `positions` (N, P) of
    each row (all positions when absent): (N, P, vocab) float32."""
    task = request.get("task")
    if task not in _trained:
        raise ValueError(f"no trained {task!r} model in this process (send a train request first)")
    trained = _trained[task]
    inputs = torch.from_numpy(np.asarray(request["inputs"], dtype=np.int64))
    positions = request.get("positions")
    if positions is not None:
        positions = torch.from_numpy(np.asarray(positions, dtype=np.int64))
    if inputs.ndim != 2 or int(inputs.min()) < 0 or int(inputs.max()) >= trained.vocab:
        raise ValueError(f"inputs must be (rows, length) token ids below {trained.vocab}")
    chunks = []
    with torch.no_grad():
        for start in range(0, len(inputs), EVAL_BATCH):
            logits = trained.model(inputs[start : start + EVAL_BATCH].to(trained.device)).float()
            if positions is not None:
                index = positions[start : start + EVAL_BATCH].to(trained.device)
                logits = logits.gather(1, index[:, :, None].expand(-1, -1, logits.shape[-1]))
            chunks.append(logits.cpu())
    return {"logits": torch.cat(chunks).numpy()}


# --- several GPUs --------------------------------------------------------------------------------------------


RANK_FILES = ("program.py", "settings.json")  # what train_on_all_gpus writes for its ranks


def rank_entry(out_dir: str, device: str | None) -> list[str]:
    """The command-line entry each launched rank runs: the folder the launching process shares with its ranks
    (on its own host only) and the device to join the group on (before the settings reach the rank)."""
    return [str(Path(__file__).resolve()), "--rank-entry", out_dir, device or "auto"]


def train_on_all_gpus(program, settings: dict[str, Any]) -> tuple[dict[str, trainer.Trained], int]:
    """One process per visible GPU (on every node of a multi-node TrainJob, one per node where none is
    visible) through the configured launcher, or mpirun across nodes; the rank on this host saves both
    models, which are loaded here, on this process's GPU, to answer the judge."""
    require_tcp(requested_nodes())
    nodes = node_layout()  # several in a TrainJob's launcher pod (KUBEVOLVE_NUM_NODES, the MPI hostfile)
    out = Path(tempfile.mkdtemp(prefix="kubevolve-ranks-", dir=".")).resolve()
    # the program and settings, for the ranks on this host: they send them to the ranks on the other nodes
    (out / RANK_FILES[0]).write_bytes(Path(program.__file__).read_bytes())
    (out / RANK_FILES[1]).write_text(json.dumps(settings))
    command = launch_command(
        rank_entry(str(out), settings.get("device")),
        gpus=max(torch.cuda.device_count(), 1 if nodes.nodes > 1 else 0),
        # across nodes, mpirun over the TrainJob's ssh (the deepspeed launcher would need pdsh there)
        launcher="mpirun" if nodes.nodes > 1 else settings["launcher"],
        nodes=nodes.nodes,
        hostfile=nodes.hostfile,
        master_addr=nodes.master_addr,
        master_port=dist_env.free_port() if nodes.nodes == 1 else 29500,
    )
    info = run_launched(command, out / "result.json")
    return load_trained(program.TokenMixer, settings, out, info), int(info["world_size"])


def requested_nodes() -> int:
    """The nodes a multi-node TrainJob gave this evaluation (KUBEVOLVE_NUM_NODES; read before the hostfile)."""
    return int(os.environ.get("KUBEVOLVE_NUM_NODES") or 1)


def require_tcp(nodes: int) -> None:
    """The ranks meet over TCP (torch.distributed's store, NCCL's bootstrap, mpirun's ssh). The judged sandbox
    refuses internet sockets to the candidate's process and its children (a seccomp filter) unless the stage
    says `network: ranks`: say so plainly rather than let the ranks time out at their rendezvous."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    except OSError as err:
        where = f"{nodes} nodes" if nodes > 1 else f"{torch.cuda.device_count()} GPUs"
        raise RuntimeError(
            f"training on {where} needs its processes to meet over TCP, and the candidate's sandbox refuses "
            f"internet sockets ({err}); let the stage's ranks meet (`stages.<stage>.network: ranks` in "
            "task.yaml, as the full stage has) or give the stage one GPU on one node (it then trains in this "
            "process, as with `launcher: null`)"
        ) from None


def load_trained(mixer_class: type, settings: dict[str, Any], out: Path, info: dict[str, Any]):
    """The models the rank on this host saved in `out`, in float32 on this process's device, in eval mode."""
    device = select_device(settings.get("device"))
    states = torch.load(out / "models.pt", map_location="cpu", weights_only=True)
    trained = {}
    for name, vocab in (("mqar", settings["mqar"]["vocab"]), ("lm", trainer.LM_VOCAB)):
        model = trainer.build_model(mixer_class, vocab, settings)
        model.load_state_dict({key: value.float() for key, value in states[name].items()})
        trained[name] = trainer.Trained(model.to(device).eval(), vocab, device, info[name])
    return trained


def train_ranks(out_dir: str, preferred: str) -> None:
    """One launched rank: join the group, take the program and settings from a rank on the launching
    process's host (a rank on another node cannot read `out_dir`), train both models with DeepSpeed; that
    rank saves them and their curves in `out_dir`, where the launching process reads them."""
    from kubevolve.sdk.evaluator_kit import load_program

    device = training_device("deepspeed", None if preferred == "auto" else preferred)
    home, files = dist_env.from_launcher_host(out_dir, RANK_FILES)
    settings = json.loads(files["settings.json"])
    settings["engine"] = "deepspeed"
    set_threads(settings["threads"])
    with tempfile.TemporaryDirectory(prefix="kubevolve-rank-") as scratch:  # this rank's own copy
        program_path = Path(scratch) / RANK_FILES[0]
        program_path.write_bytes(files["program.py"])
        mixer_class = load_program(program_path, required=["TokenMixer"]).TokenMixer
        models = {
            "mqar": trainer.train_mqar(mixer_class, settings, device, "deepspeed"),
            "lm": trainer.train_lm(mixer_class, settings, device, "deepspeed"),
        }
    if dist_env.rank() == home:
        out = Path(out_dir)
        states = {name: trainer.module_of(m.model).state_dict() for name, m in models.items()}
        torch.save(states, out / "models.pt")
        info = {name: m.info for name, m in models.items()}
        (out / "result.json").write_text(json.dumps({**info, "world_size": dist_env.world_size()}))
    dist_env.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one rank of a launched multi-GPU training")
    parser.add_argument("--rank-entry", nargs=2, metavar=("OUT", "DEVICE"), required=True)
    # the deepspeed launcher appends --local_rank=N; the rank is read from LOCAL_RANK, which it also sets
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    train_ranks(*args.rank_entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
