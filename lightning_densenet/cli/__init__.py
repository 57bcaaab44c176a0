"""`fit|validate|test|predict` through LightningCLI: `run_cli`, and its `DenseNetCLI`.

Each run writes into `runs/<experiment>/version_N/`: the resolved `config.yaml`,
TensorBoard events, `metrics.csv`, `checkpoints/` (best by val/acc, and last), and for
`predict` a `predictions.csv`. The experiment name is the config file's stem.

`fit --ckpt_path last` continues the newest run of the experiment that has a
`checkpoints/last.ckpt`, in that run's folder (`last_or_fresh`: or starts a new run when
there is none); `fit --ckpt_path RUN/checkpoints/last.ckpt` continues RUN. Checkpoints are
written atomically (`checkpointing.AtomicCheckpointIO`) and `last.ckpt` also every
`--checkpoint.last_every_s` seconds within an epoch.

One module per job, each wired in by `lightning_cli.DenseNetCLI`:

    lightning_cli      DenseNetCLI (always-on options and callbacks) and run_cli
    parser             a bad option or value ends in one `error:` sentence
    runtime_options    --model.tta & co. beat a checkpoint's hyperparameters (#20310)
    run_folder         the experiment's folder, TensorBoard and metrics.csv in one version_N
    resume             which run `fit --ckpt_path last|RUN/.../last.ckpt` continues
    checkpoint_check   --ckpt_path missing, unreadable, or not fitting the model: one sentence
    process_setup      warnings, TF32 and the compile cache, once per process

The command dispatcher (`sweep`, `runs`, `curves` and these) is `lightning_densenet.__main__`;
this package does not import it, so `sweep` can run trials through `run_cli`.
"""

from lightning_densenet.cli.lightning_cli import DenseNetCLI, run_cli

__all__ = ["DenseNetCLI", "run_cli"]
