"""DDP with a converted model: 2 processes, gloo, CPU. After one step the
converted model's gradients and buffers equal the unconverted model's, with
memory=None, "lean" and "checkpoint" (whose regions run again inside the
backward DDP's reducer watches)."""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        import hrnet_fast
        from test_convert_common import loss_of, randomize_bn

        torch.manual_seed(0)  # same initial model on every rank
        base = randomize_bn(hrnet_fast.models.create("w18_small_v1", "seg", num_classes=3)).double()
        models = {"ref": base}
        for memory in (None, "lean", "checkpoint"):
            models[str(memory)] = hrnet_fast.convert(__import__("copy").deepcopy(base), memory=memory)
        torch.manual_seed(100 + rank)  # different data per rank
        x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
        grads = {}
        for tag, model in models.items():
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            ddp.train()
            loss_of(ddp(x.clone())).backward()
            grads[tag] = {k: p.grad.clone() for k, p in model.named_parameters()}
            grads[tag + "_state"] = {k: v.clone() for k, v in model.state_dict().items()}
        torch.save(grads, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_match(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for tag in ("None", "lean", "checkpoint"):
        for res in results:
            assert res["ref"].keys() == res[tag].keys()
            for k, g in res["ref"].items():
                torch.testing.assert_close(res[tag][k], g, atol=1e-8, rtol=1e-6, msg=f"{tag} {k}")
            for k, v in res["ref_state"].items():
                torch.testing.assert_close(res[tag + "_state"][k], v, atol=1e-10, rtol=1e-7, msg=f"{tag} {k}")
        # gradients are all-reduced: both ranks hold the same (averaged) values
        for k, g in results[0][tag].items():
            torch.testing.assert_close(results[1][tag][k], g, msg=f"{tag} {k}")
