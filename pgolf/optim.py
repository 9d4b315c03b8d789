"""Muon for block matrices, Adam(W) for embeddings and scalars, declared as one table.

Muon (Keller Jordan, https://kellerjordan.github.io/posts/muon/): Nesterov momentum, then the update is
orthogonalized by a quintic Newton-Schulz iteration. Distributed: parameter i is orthogonalized by rank
``i % world``; the updates meet in one flat bf16 buffer all-reduced by sum. World size 1 runs the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .config import OptimConfig
from .model import CONTROL_PATTERNS

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximate U V^T of G = U S V^T (singular values pushed towards ~1), in bf16. G is one matrix (m, n) or a
    stack of same-shape matrices (k, m, n), each normalized and orthogonalized on its own."""
    a, b, c = NS_COEFFS
    X = G.bfloat16()
    X = X / (torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True) + eps)
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if transposed else X


class Muon(torch.optim.Optimizer):
    """``batched=False``: one parameter at a time. ``batched=True``: the same arithmetic with momentum, weight decay
    and the update as foreach ops and one Newton-Schulz call per distinct matrix shape (stacked), for fewer kernel
    launches per step. Both give each parameter to the same rank, so they agree to bf16 rounding."""

    def __init__(self, params, lr: float, momentum: float, backend_steps: int = 5, weight_decay: float = 0.0,
                 nesterov: bool = True, ns: Callable[[Tensor, int], Tensor] | None = None, batched: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps,
                                      weight_decay=weight_decay, nesterov=nesterov))
        self.ns = ns or newton_schulz
        self.batched = batched

    @torch.no_grad()
    def step(self, closure=None):
        distributed = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            total = sum(p.numel() for p in params)
            flat = torch.zeros(total, device=params[0].device, dtype=torch.bfloat16)
            if self.batched:
                self._updates_batched(group, flat, world, rank)
            else:
                self._updates_loop(group, flat, world, rank)
            if distributed and world > 1:
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            lr, wd = group["lr"], group["weight_decay"]
            if self.batched and len({p.dtype for p in params}) == 1:
                upd = flat.to(params[0].dtype)
                views = _views(upd, params)
                if wd:
                    torch._foreach_mul_(params, 1.0 - lr * wd)
                torch._foreach_add_(params, views, alpha=-lr)
                continue
            off = 0
            for p in params:
                if wd:
                    p.mul_(1.0 - lr * wd)
                p.add_(flat[off:off + p.numel()].view_as(p).to(p.dtype), alpha=-lr)
                off += p.numel()
        return None

    def _momentum_buffer(self, p: Tensor) -> Tensor:
        st = self.state[p]
        if "momentum_buffer" not in st:
            st["momentum_buffer"] = torch.zeros_like(p.grad)
        return st["momentum_buffer"]

    def _updates_loop(self, group: dict, flat: Tensor, world: int, rank: int) -> None:
        off = 0
        for i, p in enumerate(group["params"]):
            if i % world == rank and p.grad is not None:
                g = p.grad
                buf = self._momentum_buffer(p)
                buf.mul_(group["momentum"]).add_(g)
                g = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                u = self.ns(g, group["backend_steps"])
                u = u * max(1.0, g.size(0) / g.size(1)) ** 0.5
                flat[off:off + p.numel()] = u.reshape(-1)
            off += p.numel()

    def _updates_batched(self, group: dict, flat: Tensor, world: int, rank: int) -> None:
        params = group["params"]
        views = _views(flat, params)
        mine = [i for i, p in enumerate(params) if i % world == rank and p.grad is not None]
        if not mine:
            return
        grads = [params[i].grad for i in mine]
        bufs = [self._momentum_buffer(params[i]) for i in mine]
        torch._foreach_mul_(bufs, group["momentum"])
        torch._foreach_add_(bufs, grads)
        gs = torch._foreach_add(grads, bufs, alpha=group["momentum"]) if group["nesterov"] else bufs
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for j, i in enumerate(mine):
            by_shape.setdefault(tuple(params[i].shape), []).append(j)
        for shape, js in by_shape.items():
            u = self.ns(torch.stack([gs[j] for j in js]), group["backend_steps"])
            u = u * max(1.0, shape[0] / shape[1]) ** 0.5
            torch._foreach_copy_([views[mine[j]] for j in js], list(u.unbind(0)))


def _views(flat: Tensor, params: list[Tensor]) -> list[Tensor]:
    out, off = [], 0
    for p in params:
        out.append(flat[off:off + p.numel()].view_as(p))
        off += p.numel()
    return out


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
        Row("bigram_table", "adam", cfg.tied_embed_lr, cfg.embed_wd, lambda n, p: n == "bigram.embed.weight"),
        Row("head", "adam", cfg.head_lr, 0.0, lambda n, p: n == "lm_head.weight"),
        Row("matrix", "muon", cfg.matrix_lr, cfg.muon_wd,
            lambda n, p: (n.startswith("blocks.") or n == "bigram.proj.weight") and not _is_control(n, p)),
        Row("scalar", "adam", cfg.scalar_lr, cfg.adam_wd,
            lambda n, p: _is_control(n, p) and n not in ("tok_emb.weight", "bigram.embed.weight", "lm_head.weight")),
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


def build_optimizers(model: nn.Module, cfg: OptimConfig, tie_embeddings: bool,
                     device: torch.device) -> list[torch.optim.Optimizer]:
    table = param_table(cfg, tie_embeddings)
    groups = assign_params(model, table)
    opts: list[torch.optim.Optimizer] = []
    adam_groups = []
    for row in table:
        params = [p for _, p in groups[row.group]]
        if not params:
            continue
        if row.optimizer == "muon":
            m = Muon(params, lr=row.lr, momentum=cfg.muon_momentum, backend_steps=cfg.muon_backend_steps,
                     weight_decay=row.weight_decay, batched=cfg.muon_batched)
            m.param_groups[0]["base_lr"] = row.lr
            m.param_groups[0]["name"] = row.group
            opts.append(m)
        else:
            adam_groups.append(dict(params=params, lr=row.lr, base_lr=row.lr, weight_decay=row.weight_decay,
                                    name=row.group))
    if adam_groups:
        opts.insert(0, torch.optim.AdamW(adam_groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps,
                                         fused=device.type == "cuda"))
    return opts


def set_lr_scale(optimizers: list[torch.optim.Optimizer], scale: float) -> None:
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * scale


def set_muon_momentum(optimizers: list[torch.optim.Optimizer], momentum: float) -> None:
    for opt in optimizers:
        if isinstance(opt, Muon):
            for g in opt.param_groups:
                g["momentum"] = momentum
