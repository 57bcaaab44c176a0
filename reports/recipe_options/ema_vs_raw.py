"""Validation accuracy of a run's EMA weights and of its raw weights, from one checkpoint.

    python reports/recipe_options/ema_vs_raw.py RUN_DIR [OUT.json]

A run with `model.ema_decay > 0` saves the average as the checkpoint's `state_dict` and the
raw weights under `current_model_state` (Lightning's `EMAWeightAveraging`, which averages
the BatchNorm statistics with the weights). Both are validated here on the run's own
validation split, with the run's TTA setting, and the average a third time with its
BatchNorm statistics recomputed for its own weights (`torch.optim.swa_utils.update_bn` over
`BN_BATCHES` training batches, unaugmented).
"""

from __future__ import annotations

import json
import sys
from itertools import islice
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml

from lightning_densenet.data import ImageDataModule
from lightning_densenet.module import DenseNetClassifier

BN_BATCHES = 40


def main(run: Path, out: Path | None) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    ckpt_path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    data = ImageDataModule(**config["data"])
    data.setup("fit")
    results = {}
    ema, raw = ckpt["state_dict"], ckpt["current_model_state"]
    for name, state in (("ema", ema), ("raw", raw), ("ema_bn_recomputed", ema)):
        module = DenseNetClassifier.load_from_checkpoint(
            ckpt_path, map_location="cpu", compile=False, ema_decay=0.0
        )
        module.load_state_dict(state)
        if name == "ema_bn_recomputed":
            batches = islice(data.train_dataloader(), BN_BATCHES)
            images = [data.on_after_batch_transfer(batch, 0)[0] for batch in batches]
            torch.optim.swa_utils.update_bn(images, module.model)
        trainer = pl.Trainer(
            accelerator="cpu",
            precision=config["trainer"].get("precision", "32-true"),
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        (metrics,) = trainer.validate(module, datamodule=data, verbose=False)
        results[name] = round(100 * metrics["val/acc"], 2)
    results["ema_decay"] = config["model"]["ema_decay"]
    print(json.dumps(results))
    if out:
        out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
