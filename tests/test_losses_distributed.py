"""kalm_lib/losses/distributed.py: 2 gloo processes with the gathered, world-size-scaled global loss and DDP-style
gradient averaging reproduce the single-process gradient on the global batch exactly (DESIGN.md test list)."""

import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from kalm_lib.losses import gather_with_grad, world_size

REPO = pathlib.Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import copy, sys
    import torch, torch.distributed as dist
    from kalm_lib.losses import KaLMObjective, ObjectiveConfig, gather_with_grad, world_size

    rank, W, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=W)
    torch.manual_seed(0)  # same data and same "model" on every rank
    B, M, DIN, D = 3, 2, 5, 8
    X, Y, Z = (torch.randn(W * B, DIN, dtype=torch.float64), torch.randn(W * B, DIN, dtype=torch.float64),
               torch.randn(W * B, M, DIN, dtype=torch.float64))
    T = torch.rand(W * B, 1 + M, dtype=torch.float64)
    model = torch.nn.Linear(DIN, D, dtype=torch.float64)
    ref_model = copy.deepcopy(model)
    cfg = ObjectiveConfig(tau=0.1, gamma=1.0, mix_pairwise=1, mix_listwise=True, distill_weight=0.5,
                          matryoshka_dims=(8, 4), matryoshka_weights=(1.0, 0.5))
    obj = KaLMObjective(cfg)
    sl = slice(rank * B, (rank + 1) * B)
    g = gather_with_grad
    out = obj(g(model(X[sl])), g(model(Y[sl])), g(model(Z[sl])), g(T[sl]),
              generator=torch.Generator().manual_seed(1))
    assert world_size() == W
    (out["loss"] * world_size()).backward()
    for prm in model.parameters():  # what DDP does: average the gradients over ranks
        dist.all_reduce(prm.grad)
        prm.grad /= W
    ref = obj(ref_model(X), ref_model(Y), ref_model(Z), T, generator=torch.Generator().manual_seed(1))
    ref["loss"].backward()
    torch.testing.assert_close(out["loss"], ref["loss"], atol=1e-12, rtol=0)
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=0)
    # without the world-size factor the gradient would be 1/W of the global one
    assert not torch.allclose(model.weight.grad / W, ref_model.weight.grad)
    dist.destroy_process_group()
    print("OK", rank)
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gather_is_identity_without_process_group():
    t = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(t) is t and world_size() == 1


@pytest.mark.multiprocess
def test_two_process_gathered_loss_gives_the_single_process_global_gradient():
    port, w = _free_port(), 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(r), str(w), str(port)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(w)]
    outs = []
    for pr in procs:
        try:
            outs.append(pr.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for x in procs:
                x.kill()
            pytest.fail("gloo workers timed out")
    for r, (pr, o) in enumerate(zip(procs, outs)):
        assert pr.returncode == 0 and f"OK {r}" in o, o[-3000:]
