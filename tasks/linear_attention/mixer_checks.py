"""The static checks the paper names for a linear-attention layer, run inside the evaluation before training:

- interface: `TokenMixer(dim, num_heads)` is an nn.Module whose forward maps (B, T, dim) float32 to the same
  shape, finite, differentiable, at any length (including 1 and lengths that are not a multiple of a chunk),
  the same output for the same input (no hidden state carried between calls), within a parameter cap;
- causality: changing tokens from position t on never changes an output before t (perturbation test in eval
  mode), and in training mode no gradient flows from an output to a later token;
- sub-quadratic cost: a complexity probe counts the work of every tensor operation of a forward pass at two
  sequence lengths (matrix products and convolutions by their multiply-adds, attention kernels by
  queries x keys x width, everything else by the elements it reads and writes) and fits the exponent.

Each violation raises `CheckFailed` with a message that says what was wrong, where, and by how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch._dynamo  # noqa: F401  imported here, in the warm worker: the probe's first dispatch would import it (~2 s)
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

aten = torch.ops.aten
CAUSAL_TOLERANCE = 1e-5  # relative to the output's scale
GRADIENT_LEAK_TOLERANCE = 1e-6
MAX_COST_EXPONENT = 1.5  # linear is 1, quadratic attention 2; chunked forms and convolutions stay near 1
PROBE_LENGTHS = (256, 1024)
PARAM_CAP_PER_DIM2 = 8  # mixer parameters <= 8 * dim^2 (DeltaNet has about 4 * dim^2)


class CheckFailed(ValueError):
    pass


@dataclass
class CheckReport:
    parameters: int
    cost_exponent: float
    cost_ratio: float
    summary: str


def run_checks(mixer_class: type, dim: int, heads: int, seed: int = 0) -> CheckReport:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mixer = build(mixer_class, dim, heads)
    parameters = check_interface(mixer, dim, generator)
    check_causality(mixer, dim, generator)
    exponent, ratio, growth = cost_exponent(mixer, dim, generator)
    if exponent > MAX_COST_EXPONENT:
        low, high = PROBE_LENGTHS
        raise CheckFailed(
            f"quadratic cost: the layer's work grows as T^{exponent:.2f} from T={low} to T={high} "
            f"(x{ratio:.1f} for x{high // low} tokens; fastest-growing op: {growth}); a linear-attention "
            f"layer must stay below T^{MAX_COST_EXPONENT}"
        )
    summary = (
        f"interface ok ({parameters} parameters); causal (perturbation and gradient tests); "
        f"cost exponent {exponent:.2f} (work x{ratio:.1f} from T={PROBE_LENGTHS[0]} to T={PROBE_LENGTHS[1]})"
    )
    return CheckReport(parameters, exponent, ratio, summary)


def build(mixer_class: type, dim: int, heads: int) -> nn.Module:
    if not (isinstance(mixer_class, type) and issubclass(mixer_class, nn.Module)):
        raise CheckFailed(f"interface: TokenMixer must be an nn.Module subclass, got {mixer_class!r}")
    try:
        mixer = mixer_class(dim, heads)
    except Exception as err:
        raise CheckFailed(
            f"interface: TokenMixer({dim}, {heads}) failed: {type(err).__name__}: {err}"
        ) from None
    return mixer


def check_interface(mixer: nn.Module, dim: int, generator: torch.Generator) -> int:
    parameters = sum(p.numel() for p in mixer.parameters())
    cap = PARAM_CAP_PER_DIM2 * dim * dim
    if parameters == 0:
        raise CheckFailed("interface: the mixer has no parameters, so nothing can be learned")
    if parameters > cap:
        raise CheckFailed(
            f"interface: the mixer has {parameters} parameters at dim {dim}, over the cap of "
            f"{PARAM_CAP_PER_DIM2} * dim^2 = {cap}"
        )
    mixer.eval()
    for length in (1, 37, 64):
        x = torch.randn(2, length, dim, generator=generator)
        with torch.no_grad():
            out = _forward(mixer, x, f"length {length}")
            again = _forward(mixer, x, f"length {length}")
        if not torch.equal(out, again):
            raise CheckFailed(
                "interface: two calls on the same input gave different outputs in eval mode "
                "(a mixer must not carry state from one call to the next)"
            )
    mixer.train()
    x = torch.randn(2, 37, dim, generator=generator, requires_grad=True)
    out = _forward(mixer, x, "training mode")
    (out * torch.randn(out.shape, generator=generator)).sum().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or not x.grad.abs().sum() > 0:
        raise CheckFailed("interface: no finite gradient reaches the input through the mixer")
    grads = [p.grad for p in mixer.parameters() if p.grad is not None]
    if not grads or not all(torch.isfinite(g).all() for g in grads):
        raise CheckFailed("interface: the mixer's parameters get no finite gradient")
    mixer.zero_grad(set_to_none=True)
    return parameters


def _forward(mixer: nn.Module, x: torch.Tensor, where: str) -> torch.Tensor:
    try:
        out = mixer(x)
    except Exception as err:
        raise CheckFailed(
            f"interface: forward on {tuple(x.shape)} ({where}) failed: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"interface: forward must return a tensor, got {type(out).__name__}")
    if out.shape != x.shape:
        raise CheckFailed(
            f"interface: forward maps {tuple(x.shape)} to {tuple(out.shape)}, expected the same shape"
        )
    if out.dtype != x.dtype:
        raise CheckFailed(f"interface: forward returned {out.dtype} for {x.dtype} input")
    if not torch.isfinite(out).all():
        raise CheckFailed(f"interface: forward on {tuple(x.shape)} ({where}) returned non-finite values")
    return out


def check_causality(mixer: nn.Module, dim: int, generator: torch.Generator, length: int = 48) -> None:
    mixer.eval()
    x = torch.randn(2, length, dim, generator=generator)
    with torch.no_grad():
        base = mixer(x)
        scale = 1.0 + float(base.abs().max())
        for cut in (1, 5, length // 3, length // 2, length - 1):
            changed = x.clone()
            changed[:, cut:] = 3.0 * torch.randn(2, length - cut, dim, generator=generator)
            diff = (mixer(changed)[:, :cut] - base[:, :cut]).abs().amax(dim=(0, 2))
            if float(diff.max()) > CAUSAL_TOLERANCE * scale:
                position = int(torch.nonzero(diff > CAUSAL_TOLERANCE * scale)[0])
                raise CheckFailed(
                    f"not causal: changing the tokens from position {cut} on changed the output at position "
                    f"{position} by {float(diff[position]):.2e}"
                )
    mixer.train()
    x = torch.randn(2, length, dim, generator=generator, requires_grad=True)
    cut = length // 2
    out = mixer(x)
    (out[:, :cut] * torch.randn(out[:, :cut].shape, generator=generator)).sum().backward()
    leak = x.grad[:, cut:].abs().amax(dim=(0, 2))
    mixer.zero_grad(set_to_none=True)
    if float(leak.max()) > GRADIENT_LEAK_TOLERANCE:
        position = cut + int(torch.argmax(leak))
        raise CheckFailed(
            f"not causal: in training mode the outputs before position {cut} depend on the token at position "
            f"{position} (gradient {float(leak.max()):.2e})"
        )


class CostProbe(TorchDispatchMode):
    """Counts the work of every aten operation run under it, per operation name."""

    def __init__(self) -> None:
        super().__init__()
        self.costs: dict[str, float] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func.overloadpacket)
        self.costs[name] = self.costs.get(name, 0.0) + op_cost(func, args, kwargs, out)
        return out

    @property
    def total(self) -> float:
        return sum(self.costs.values())


def op_cost(func, args, kwargs, out) -> float:
    tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
    cost = float(sum(t.numel() for t in tensors) + sum(t.numel() for t in outputs))
    packet = func.overloadpacket
    name = str(packet)
    if packet in (aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.addbmm) and len(tensors) >= 2:
        a, b = tensors[-2], tensors[-1]
        cost += float(math.prod(a.shape)) * b.shape[-1]
    elif packet is aten.convolution and len(tensors) >= 2 and outputs:
        weight = tensors[1]
        cost += float(outputs[0].numel()) * math.prod(weight.shape[1:])
    elif "scaled_dot_product" in name and len(tensors) >= 3:
        q, k, v = tensors[0], tensors[1], tensors[2]
        cost += float(math.prod(q.shape[:-1])) * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    elif packet is aten.linalg_solve_triangular and len(tensors) >= 2:
        a, b = tensors[0], tensors[1]
        cost += float(math.prod(a.shape)) * b.shape[-1]
    return cost


def measure_cost(mixer: nn.Module, dim: int, length: int, generator: torch.Generator) -> CostProbe:
    x = torch.randn(1, length, dim, generator=generator)
    probe = CostProbe()
    with torch.no_grad(), probe:
        mixer(x)
    return probe


def cost_exponent(mixer: nn.Module, dim: int, generator: torch.Generator) -> tuple[float, float, str]:
    """(exponent, ratio of total work, the op whose work grew most) between the two probe lengths."""
    mixer.eval()
    low, high = PROBE_LENGTHS
    try:
        small = measure_cost(mixer, dim, low, generator)
        large = measure_cost(mixer, dim, high, generator)
    except Exception as err:
        raise CheckFailed(
            f"interface: forward at length {high} failed: {type(err).__name__}: {err}"
        ) from None
    ratio = large.total / max(small.total, 1.0)
    exponent = math.log(ratio) / math.log(high / low)
    growth = max(large.costs, key=lambda op: large.costs[op] - small.costs.get(op, 0.0))
    factor = large.costs[growth] / max(small.costs.get(growth, 0.0), 1.0)
    return exponent, ratio, f"{growth} x{factor:.1f}"
