import io
import json
import math

import pytest
import torch

from conftest import FIXTURES
from lxrt.optimization import BertAdam, warmup_linear

NAMES = ("p1", "p2", "p3")


@pytest.fixture(scope="module")
def fx():
    data = torch.load(FIXTURES / "optim_bertadam.pt", weights_only=False)
    meta = json.loads((FIXTURES / "optim_bertadam.json").read_text())
    return data, meta


def _make(data, meta):
    params = [torch.nn.Parameter(data[f"init.{n}"].clone()) for n in NAMES]
    opt = BertAdam(params, lr=meta["lr"], warmup=meta["warmup"], t_total=meta["t_total"])
    return params, opt


def _do_step(params, opt, data, meta, s):
    for n, p in zip(NAMES, params):
        p.grad = data[f"grad_raw.step{s:02d}.{n}"].clone()
    if s == meta["p3_grad_none_at_step"]:
        params[2].grad = None
    total = torch.nn.utils.clip_grad_norm_(params, meta["max_grad_norm_clip"])
    opt.step()
    return total


def _check_after(params, opt, data, s):
    for n, p in zip(NAMES, params):
        torch.testing.assert_close(p.detach(), data[f"after.step{s:02d}.{n}"], atol=1e-6, rtol=0)
    ref_lr = data[f"get_lr.step{s:02d}"].tolist()
    got_lr = opt.get_lr()
    assert len(got_lr) == len(ref_lr)
    for g, r in zip(got_lr, ref_lr):
        assert g == pytest.approx(r, abs=1e-15)


def test_fixture_trajectory(fx):
    data, meta = fx
    params, opt = _make(data, meta)
    assert opt.get_lr() == [0]  # no state yet, like the authors'
    for s in range(meta["steps"]):
        total = _do_step(params, opt, data, meta, s)
        torch.testing.assert_close(total, data[f"clip_total_norm.step{s:02d}"], atol=1e-6, rtol=1e-6)
        _check_after(params, opt, data, s)
    # the first update has lr 0: parameters unchanged
    for n in NAMES:
        assert torch.equal(data[f"after.step00.{n}"], data[f"init.{n}"])
    # lagging step counter of p3 (skipped at step 4)
    steps = [opt.state[p]["step"] for p in params]
    assert steps == [meta["steps"], meta["steps"], meta["steps"] - 1]
    for n, p in zip(NAMES, params):
        torch.testing.assert_close(p.detach().flatten(), torch.tensor(meta["final"][n]), atol=1e-6, rtol=0)


def test_warmup_linear_values(fx):
    _, meta = fx
    for k, v in meta["warmup_linear_values"].items():
        got = warmup_linear(float(k), meta["warmup"])
        assert got == pytest.approx(v, abs=1e-12), k
    assert warmup_linear(0.0, 0.1) == 0.0
    assert warmup_linear(0.1, 0.1) == 1.0
    assert warmup_linear(2.0, 0.1) == 0


def test_state_dict_round_trip_mid_trajectory(fx):
    data, meta = fx
    params, opt = _make(data, meta)
    split = 6  # after p3 has skipped a step, so its counter lags
    for s in range(split):
        _do_step(params, opt, data, meta, s)
    buf = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)

    params2 = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
    opt2 = BertAdam(params2, lr=123.0, warmup=0.5, t_total=1)  # hyperparameters come from the state dict
    opt2.load_state_dict(saved["opt"])
    assert [opt2.state[p]["step"] for p in params2] == [split, split, split - 1]
    assert opt2.get_lr() == opt.get_lr()

    for s in range(split, meta["steps"]):
        _do_step(params, opt, data, meta, s)
        _do_step(params2, opt2, data, meta, s)
        for p, q in zip(params, params2):
            assert torch.equal(p, q)
        _check_after(params2, opt2, data, s)


def _naive_bertadam(params, states, lr, warmup, t_total, b1=0.9, b2=0.999, e=1e-6, wd=0.01):
    """The authors' per-parameter loop, written out."""
    for i, p in enumerate(params):
        if p.grad is None:
            continue
        g = p.grad
        st = states[i]
        if not st:
            st["step"] = 0
            st["m"] = torch.zeros_like(p)
            st["v"] = torch.zeros_like(p)
        st["m"].mul_(b1).add_(g, alpha=1 - b1)
        st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
        update = st["m"] / (st["v"].sqrt() + e)
        if wd > 0.0:
            update += wd * p.data
        if t_total != -1:
            x = st["step"] / t_total
            f = x / warmup if x < warmup else max((x - 1.0) / (warmup - 1.0), 0)
            lr_t = lr * f
        else:
            lr_t = lr
        p.data.add_(-(lr_t * update))
        st["step"] += 1


@pytest.mark.parametrize("t_total", [7, -1])
def test_foreach_matches_naive_loop(t_total):
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (13,), (3, 4, 2), (1,), (64, 9), ()]
    init = [torch.randn(s, generator=gen) for s in shapes]
    pa = [torch.nn.Parameter(t.clone()) for t in init]
    pb = [t.clone() for t in init]
    opt = BertAdam(pa, lr=0.05, warmup=0.2, t_total=t_total)
    states = [dict() for _ in pb]
    for s in range(10):
        grads = [torch.randn(sh, generator=gen) * (1 + s % 3) for sh in shapes]
        skip = {s % len(shapes)} if s in (2, 3, 5) else set()  # several params lag, at different steps
        for i, (p, q, g) in enumerate(zip(pa, pb, grads)):
            p.grad = None if i in skip else g.clone()
            q.grad = None if i in skip else g.clone()
        opt.step()
        _naive_bertadam(pb, states, 0.05, 0.2, t_total)
        for p, q in zip(pa, pb):
            torch.testing.assert_close(p.detach(), q, atol=1e-7, rtol=1e-6)
    assert [opt.state[p]["step"] for p in pa] == [st["step"] for st in states]
    assert len(set(st["step"] for st in states)) > 1
    for p, st in zip(pa, states):
        torch.testing.assert_close(opt.state[p]["exp_avg"], st["m"], atol=0, rtol=0)
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], st["v"], atol=0, rtol=0)


def test_constant_lr_and_param_groups():
    p = torch.nn.Parameter(torch.ones(3))
    q = torch.nn.Parameter(torch.ones(2))
    opt = BertAdam([{"params": [p]}, {"params": [q], "lr": 0.0}], lr=0.1, t_total=-1)
    p.grad = torch.ones(3)
    q.grad = torch.ones(2)
    opt.step()
    # constant lr: the first update already moves p; m=0.1, v=0.001 -> update = 0.1/(sqrt(.001)+1e-6) + 0.01
    expected = 1 - 0.1 * (0.1 / (math.sqrt(0.001) + 1e-6) + 0.01)
    torch.testing.assert_close(p.detach(), torch.full((3,), expected), atol=1e-6, rtol=0)
    assert torch.equal(q.detach(), torch.ones(2))
    assert opt.get_lr() == [0.1, 0.0]


def test_decay_with_zero_grad_and_lr0_first_step():
    p = torch.nn.Parameter(torch.full((4,), 2.0))
    opt = BertAdam([p], lr=0.1, warmup=0.1, t_total=100)
    p.grad = torch.zeros(4)
    opt.step()  # lr 0 at the first update
    assert torch.equal(p.detach(), torch.full((4,), 2.0))
    p.grad = torch.zeros(4)
    opt.step()  # zero grad still decays: x = 1/100 -> f = 0.1
    torch.testing.assert_close(p.detach(), torch.full((4,), 2.0 - 0.1 * 0.1 * 0.01 * 2.0), atol=1e-7, rtol=0)
