"""Muon for block matrices, Adam(W) for embeddings and scalars, declared as one table; the gradient exchange.

Muon (Keller Jordan, https://kellerjordan.github.io/posts/muon/): Nesterov momentum, then the update is
orthogonalized by a quintic Newton-Schulz iteration (``optim.muon_ns``: the classic 5-step coefficients or the
Polar Express per-step ones, arXiv:2505.16932), optionally after normalising each row (MuonEq-R, arXiv:2603.28254).
One implementation for 1 and N processes:

- Each matrix has an owner rank, chosen so every rank's Newton-Schulz FLOPs are about equal (longest first).
- The matrices' gradients live in one flat fp32 buffer laid out by owner (``p.grad`` are views into it, so backward
  writes there directly). After backward one reduce-scatter leaves each rank the averaged gradients of its own
  matrices; it runs momentum and one stacked Newton-Schulz per matrix shape on them; one all-gather of the bf16
  updates brings every rank all of them. No DDP, no all-reduce of a zero-padded buffer.
- Adam's parameters (embeddings, scalars: ~1M values) are all-reduced in one coalesced call per dtype after backward.
  (Overlapping it with backward would buy nothing: the tied embedding, the largest, gets its gradient last.)
- Gradient clipping sees exactly the averaged gradients: the norm adds Adam's (replicated) and every rank's own
  Muon share (summed over ranks), all on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.profiler import record_function

from .config import OptimConfig
from .dist import rank_world
from .model import CONTROL_PATTERNS, LOOKUP_TABLES

NS5 = ((3.4445, -4.7750, 2.0315),) * 5
# Polar Express (Amsel et al., arXiv:2505.16932), as the 2026-04-23 record uses them: one (a, b, c) per step.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
COEFFS = {"ns5": NS5, "polar_express": POLAR_EXPRESS}


def newton_schulz(G: Tensor, steps: int = 5, eps: float = 1e-7, coeffs: str = "ns5",
                  dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """Approximate U V^T of G = U S V^T (singular values pushed towards ~1), in ``dtype`` (bf16: the fast path;
    tests use float64). G is one matrix (m, n) or a stack of same-shape matrices (k, m, n), each normalized
    (Frobenius) and orthogonalized on its own."""
    table = COEFFS[coeffs]
    X = G.to(dtype)
    X = X / (torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True) + eps)
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    for i in range(steps):
        a, b, c = table[min(i, len(table) - 1)]
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if transposed else X


def ns_flops(shape: tuple[int, ...], steps: int) -> float:
    m, n = sorted(shape[-2:])
    return steps * (4.0 * m * m * n + 2.0 * m ** 3)


def assign_owners(shapes: list[tuple[int, ...]], world: int, steps: int = 5) -> list[int]:
    """Owner rank of each matrix: longest processing time first, so the ranks' Newton-Schulz FLOPs are balanced
    (not their matrix counts). Deterministic: every rank computes the same plan."""
    load = [0.0] * world
    owners = [0] * len(shapes)
    for i in sorted(range(len(shapes)), key=lambda i: (-ns_flops(shapes[i], steps), i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += ns_flops(shapes[i], steps)
    return owners


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float, backend_steps: int = 5, weight_decay: float = 0.0,
                 nesterov: bool = True, coeffs: str = "ns5", row_norm: bool = False,
                 ns: Callable[..., Tensor] | None = None, update_dtype: torch.dtype = torch.bfloat16):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps,
                                      weight_decay=weight_decay, nesterov=nesterov))
        self.coeffs, self.row_norm = coeffs, row_norm
        self.update_dtype = update_dtype  # bf16: Newton-Schulz's own precision, half the all-gather
        self.ns = ns or newton_schulz
        self._plan: _Plan | None = None

    # ---- layout ----
    def plan(self) -> "_Plan":
        if self._plan is None:
            self._plan = _Plan(self)
        return self._plan

    def attach_grads(self) -> None:
        """Make every parameter's .grad a view into the flat gradient buffer (backward then writes there)."""
        self.plan().attach()

    def zero_grad(self, set_to_none: bool = True) -> None:  # the views stay; the buffer is zeroed in one kernel
        self.plan().zero()

    # ---- the exchange ----
    @torch.no_grad()
    def reduce_grads(self) -> None:
        """Average the gradients over ranks: each rank gets the averaged gradients of the matrices it owns."""
        self.plan().reduce()

    def owned_grads(self) -> list[Tensor]:
        """The (averaged) gradients this rank holds after ``reduce_grads``."""
        return [p.grad for p in self.plan().mine]

    @torch.no_grad()
    def squared_norms(self) -> Tensor:
        """Every matrix's squared gradient norm, in parameter order, on every rank: each rank fills the entries of
        the matrices it owns and a sum over ranks adds zeros elsewhere -- exact, so the clip norm is the same number
        for any world size."""
        pl = self.plan()
        sq = torch.zeros(len(pl.params), dtype=torch.float32, device=pl.grad_flat.device)
        if pl.mine:  # one foreach kernel; the index lives on the device (a host list would sync every step)
            sq.index_copy_(0, pl.mine_index, torch.stack(torch._foreach_norm([p.grad for p in pl.mine])).square())
        if pl.world > 1:
            dist.all_reduce(sq, op=dist.ReduceOp.SUM)
        return sq

    @torch.no_grad()
    def step(self, closure=None):
        pl = self.plan()
        mine = pl.mine
        if mine:
            group = self.param_groups[0]
            mom, nesterov, steps = group["momentum"], group["nesterov"], group["backend_steps"]
            grads = [p.grad for p in mine]
            bufs = []
            for p in mine:
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.zeros_like(p.grad)
                bufs.append(st["momentum_buffer"])
            torch._foreach_mul_(bufs, mom)
            torch._foreach_add_(bufs, grads)
            gs = torch._foreach_add(grads, bufs, alpha=mom) if nesterov else bufs
            for shape, idx in pl.mine_by_shape.items():
                G = torch.stack([gs[j] for j in idx])
                if self.row_norm:  # MuonEq-R: every row of the update to unit norm before orthogonalizing
                    G = G / torch.linalg.vector_norm(G, dim=-1, keepdim=True).clamp_min(1e-7)
                U = self.ns(G, steps, coeffs=self.coeffs) * max(1.0, shape[0] / shape[1]) ** 0.5
                torch._foreach_copy_([pl.upd_views[pl.index[mine[j]]] for j in idx], list(U.unbind(0)))
        pl.gather()
        upd = pl.views(pl.upd_flat.float())  # one cast for all updates
        for group in self.param_groups:
            ps = group["params"]
            if group["weight_decay"]:
                torch._foreach_mul_(ps, 1.0 - group["lr"] * group["weight_decay"])
            torch._foreach_add_(ps, [upd[pl.index[p]] for p in ps], alpha=-group["lr"])
        return None

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._plan = None  # rebuilt (and grads re-attached) at the next use


class _Plan:
    """Where each matrix's gradient and update live: flat buffers laid out by owner rank, padded per rank."""

    def __init__(self, opt: Muon):
        rank, world = rank_world()
        self.rank, self.world = rank, world
        params = [p for g in opt.param_groups for p in g["params"]]
        steps = opt.param_groups[0]["backend_steps"]
        owners = assign_owners([tuple(p.shape) for p in params], world, steps)
        order = sorted(range(len(params)), key=lambda i: (owners[i], tuple(params[i].shape), i))
        seg = [0] * world
        offsets = {}
        for i in order:
            offsets[i] = seg[owners[i]]
            seg[owners[i]] += params[i].numel()
        self.seg = max(seg) if params else 0
        dev = params[0].device if params else torch.device("cpu")
        self.grad_flat = torch.zeros(world * self.seg, device=dev, dtype=torch.float32)
        self.upd_flat = torch.zeros(world * self.seg, device=dev, dtype=opt.update_dtype)
        self.params = params
        self.index = {p: i for i, p in enumerate(params)}
        self.at = [owners[i] * self.seg + offsets[i] for i in range(len(params))]
        self.grad_views = self.views(self.grad_flat)
        self.upd_views = self.views(self.upd_flat)
        self.mine = [params[i] for i in order if owners[i] == rank]
        self.mine_index = torch.tensor([self.index[p] for p in self.mine], dtype=torch.long, device=dev)
        self.mine_by_shape: dict[tuple[int, ...], list[int]] = {}
        for j, p in enumerate(self.mine):
            self.mine_by_shape.setdefault(tuple(p.shape), []).append(j)
        self.attached = False

    def views(self, flat: Tensor) -> list[Tensor]:
        """Each parameter's slice of a flat buffer in this layout."""
        return [flat[at:at + p.numel()].view_as(p) for p, at in zip(self.params, self.at)]

    def attach(self) -> None:
        for p, v in zip(self.params, self.grad_views):
            if p.dtype != torch.float32:
                raise TypeError(f"Muon keeps fp32 master matrices; got {p.dtype} {tuple(p.shape)}")
            p.grad = v
        self.attached = True

    def zero(self) -> None:
        if not self.attached:
            self.attach()
        self.grad_flat.zero_()

    def reduce(self) -> None:
        if self.world == 1:
            return
        mine = self.grad_flat[self.rank * self.seg:(self.rank + 1) * self.seg]
        dist.reduce_scatter_tensor(mine, self.grad_flat, op=dist.ReduceOp.SUM)
        mine.mul_(1.0 / self.world)

    def gather(self) -> None:
        if self.world == 1:
            return
        mine = self.upd_flat[self.rank * self.seg:(self.rank + 1) * self.seg].clone()
        dist.all_gather_into_tensor(self.upd_flat, mine)


@torch.no_grad()
def all_reduce_grads(params: list[Tensor]) -> None:
    """Average the gradients of replicated parameters over ranks: one coalesced all-reduce per dtype."""
    _, world = rank_world()
    if world == 1:
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for p in params:
        if p.grad is not None:
            by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.mul_(1.0 / world)
        torch._foreach_copy_(grads, [c.view_as(g) for c, g in zip(torch.split(flat, [g.numel() for g in grads]), grads)])


@torch.no_grad()
def clip_grad_norm(replicated: list[Tensor], sharded: list[Tensor], sharded_sq: Tensor | None,
                   max_norm: float) -> Tensor:
    """Clip by the global norm of the averaged gradients: the replicated ones (every rank has all of them) and the
    sharded ones (``sharded_sq``: every matrix's squared norm, the same vector on every rank; ``sharded``: this
    rank's own share, which it scales). Returns the norm (a GPU scalar; nothing waits for it)."""
    parts = []
    for dtype in sorted({g.dtype for g in replicated}, key=str):  # foreach_norm wants one dtype per call
        parts.append(torch.stack(torch._foreach_norm([g for g in replicated if g.dtype == dtype])).float().square())
    if sharded_sq is not None and sharded_sq.numel():
        parts.append(sharded_sq)
    norm = torch.cat(parts).sum().sqrt()
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    grads = replicated + sharded
    for dtype in {g.dtype for g in grads}:
        torch._foreach_mul_([g for g in grads if g.dtype == dtype], coef.to(dtype))
    return norm


@dataclass
class Row:
    group: str
    optimizer: str  # muon | adam
    lr: float
    weight_decay: float
    match: Callable[[str, Tensor], bool]


def _is_control(name: str, p: Tensor) -> bool:
    return p.ndim < 2 or any(k in name for k in CONTROL_PATTERNS)


def param_table(cfg: OptimConfig, tie_embeddings: bool) -> list[Row]:
    """The optimizer policy: which parameter goes where, at what lr and weight decay."""
    return [
        Row("embed", "adam", cfg.tied_embed_lr if tie_embeddings else cfg.embed_lr, cfg.embed_wd,
            lambda n, p: n == "tok_emb.weight"),
        Row("bigram_table", "adam", cfg.tied_embed_lr, cfg.embed_wd, lambda n, p: n in LOOKUP_TABLES),
        Row("head", "adam", cfg.head_lr, 0.0, lambda n, p: n == "lm_head.weight"),
        Row("matrix", "muon", cfg.matrix_lr, cfg.muon_wd,
            lambda n, p: (n.startswith("blocks.") or n in ("bigram.proj.weight", "value_embed.proj.weight"))
            and not _is_control(n, p)),
        Row("scalar", "adam", cfg.scalar_lr, cfg.adam_wd,
            lambda n, p: _is_control(n, p) and n not in ("tok_emb.weight", "lm_head.weight", *LOOKUP_TABLES)),
    ]


def assign_params(model: nn.Module, table: list[Row]) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Map each table row to its parameters; every parameter must match exactly one row."""
    out: dict[str, list[tuple[str, nn.Parameter]]] = {r.group: [] for r in table}
    for name, p in model.named_parameters():
        hits = [r.group for r in table if r.match(name, p)]
        if len(hits) != 1:
            raise AssertionError(f"parameter {name} {tuple(p.shape)} matches optimizer rows {hits}; "
                                 "the table must cover every parameter exactly once")
        out[hits[0]].append((name, p))
    return out


class Optimizers:
    """The run's optimizers and the gradient exchange between backward and their steps, for 1 or N ranks."""

    def __init__(self, adam: torch.optim.Optimizer | None, muon: Muon | None, clip: float):
        self.adam, self.muon, self.clip = adam, muon, clip
        self.all = [o for o in (adam, muon) if o is not None]
        self.replicated = [p for g in adam.param_groups for p in g["params"]] if adam is not None else []

    def zero_grad(self) -> None:
        for o in self.all:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Average gradients over ranks, clip, and step: every rank ends with the same parameters."""
        with record_function("pgolf/grad_exchange"):
            all_reduce_grads(self.replicated)
            if self.muon is not None:
                self.muon.reduce_grads()
        if self.clip > 0:
            with record_function("pgolf/clip"):
                clip_grad_norm([p.grad for p in self.replicated if p.grad is not None],
                               self.muon.owned_grads() if self.muon is not None else [],
                               self.muon.squared_norms() if self.muon is not None else None, self.clip)
        if self.adam is not None:
            with record_function("pgolf/adam"):
                self.adam.step()
        if self.muon is not None:
            with record_function("pgolf/muon"):
                self.muon.step()

    def set_lr_scale(self, scale: float) -> None:
        for opt in self.all:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale

    def set_muon_momentum(self, momentum: float) -> None:
        if self.muon is not None:
            for g in self.muon.param_groups:
                g["momentum"] = momentum

    def state_dict(self) -> list[dict]:
        return [o.state_dict() for o in self.all]

    def load_state_dict(self, states: list[dict]) -> None:
        for o, st in zip(self.all, states):
            o.load_state_dict(st)


def build_optimizers(model: nn.Module, cfg: OptimConfig, tie_embeddings: bool, device: torch.device) -> Optimizers:
    table = param_table(cfg, tie_embeddings)
    groups = assign_params(model, table)
    muon, adam_groups = None, []
    for row in table:
        params = [p for _, p in groups[row.group]]
        if not params:
            continue
        if row.optimizer == "muon":
            muon = Muon(params, lr=row.lr, momentum=cfg.muon_momentum, backend_steps=cfg.muon_backend_steps,
                        weight_decay=row.weight_decay, coeffs=cfg.muon_ns, row_norm=cfg.muon_row_norm)
            muon.param_groups[0]["base_lr"] = row.lr
            muon.param_groups[0]["name"] = row.group
        else:
            adam_groups.append(dict(params=params, lr=row.lr, base_lr=row.lr, weight_decay=row.weight_decay,
                                    name=row.group))
    adam = torch.optim.AdamW(adam_groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                             fused=device.type == "cuda") if adam_groups else None
    return Optimizers(adam, muon, cfg.grad_clip_norm)
