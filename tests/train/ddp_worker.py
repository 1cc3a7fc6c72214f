"""Run by test_distributed.py under `torchrun --nproc_per_node 2`: train the tiny model and dump
this rank's final raw and EMA weights to DUMP_DIR/rank{R}.safetensors (outside OUT_DIR)."""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TinyPairs, tiny_config, tiny_vdm_config, train  # noqa: E402

from meddiff.train import loop  # noqa: E402

out_dir, dump_dir, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
objective = sys.argv[4] if len(sys.argv) > 4 else "ddpm"
captured = {}

orig_init = loop._Run.__init__


def init(self, cfg, env, *rest):
    orig_init(self, cfg, env, *rest)
    captured["run"] = self


loop._Run.__init__ = init
cfg = (tiny_vdm_config(out_dir, steps=3, batch_size=batch, lr_decay_steps=3) if objective == "vdm"
       else tiny_config(out_dir, dropout=0.0, steps=3, batch_size=batch))
train(cfg, TinyPairs(), progress=False)
run = captured["run"]
rank = int(os.environ["RANK"])
tensors = {f"model.{k}": v.detach().clone() for k, v in run.net.state_dict().items()}
tensors.update({f"ema.{k}": v.detach().clone() for k, v in run.ema.state_dict().items()})
dump_dir.mkdir(parents=True, exist_ok=True)
save_file(tensors, str(dump_dir / f"rank{rank}.safetensors"))
