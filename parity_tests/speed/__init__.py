"""The training step, eager against compiled, in PyTorch and in TensorFlow, across model sizes.

    python -m parity_tests.speed --arch densenet_bc_100_k12 [cnn:w32 mlp:w512 ...]
        [--batch-size 64] [--steps 20] [--repeats 5] [--warmup 3] [--repeat-seconds S]
        [--threads N] [--cases torch-eager tf-xla ...] [--out DIR]
        [--cold-compile | --cold-and-warm]
    python -m parity_tests.speed --study [--out DIR]      # the whole study, defaults below

Cases (`cases.CASES`; each in a fresh interpreter, both frameworks pinned to the same
thread count; on a machine with a GPU the PyTorch cases run on it):

    torch-eager                   build_model + SGD(nesterov) + torch_train_step, step by step
    torch-channels-last           the same, model and input in NHWC memory layout
    torch-bf16                    channels-last + torch.autocast(bfloat16)
    torch-compile                 torch.compile(model), default mode
    torch-compile-step            torch.compile of the whole step function (forward, backward
                                  and optimiser step; Dynamo splits it at .backward())
    torch-compile-bf16            torch.compile + channels-last + bf16 autocast
    torch-compile-reduce-overhead torch.compile(model, mode=...): CUDA graphs; GPU only
    torch-compile-max-autotune    torch.compile(model, mode=...): autotuned kernels; GPU only
    torch-compile-bf16-reduce-overhead   bf16 + channels-last + CUDA graphs; GPU only
    tf-eager                      tf_reference.build_model + L2SGD + TrainStep, op by op
    tf-function                   the step in tf.function(jit_compile=False)
    tf-loop                       every step of a repeat inside one tf.function (the loop
                                  mode of tf_reference.train)
    tf-xla                        the step in tf.function(jit_compile=True)
    tf-bf16                       tf.function with Keras' "mixed_bfloat16" policy
    tf-fit, tf-fit-xla,           Keras' own loop: compile(jit_compile=False / True,
    tf-fit-eager                  run_eagerly=True) + one fit call per repeat (the fit
                                  modes of tf_reference.train)

Models (`--arch`): DenseNet preset names, `cnn:wW[dD]` (the plain CNN, default depth 6) and
`mlp:wW[dD]` (the MLP, default depth 2), built alike in both frameworks; `NAME@B` trains
that one model on batches of B instead of --batch-size.

Every case trains on one synthetic batch of the real shape (so no input pipeline is timed),
times its first step apart (compilation or tracing happens there), runs `--warmup` more,
then times `--repeats` runs of `--steps` steps. The driver also counts each model's FLOPs
(`torch.utils.flop_counter`) and measures the machine's matmul and conv peak in the same
run. The report goes to `--out` (default `runs/speed/<arch>`, beside the training runs: the
committed reports under `reports/` are only written when asked for): `speed.json` (every raw
number, the machine, versions and the command), `speed.md` (the tables) and PNG plots.
`--arch` and `--cases` both take a list of names separated by spaces (commas work too).
`python -m parity_tests.speed.plots DIR` redraws the plots from `DIR/speed.json`.

One job a module; only the workers import a framework, each one only:

    cases.py         the case table, model names (`--arch`), the settings every case shares
    cli.py           the command line and the study's defaults
    driver.py        one worker process per case (torch.compile's cache cold / warm), the
                     machine's description
    worker.py        what a worker process computes (a case, FLOPs or the peak)
    timing.py        the timing loop: first step apart, warm-up, repeats; peak memory
    torch_runner.py  the PyTorch networks and a case's step (`parity_tests.train_step`)
    tf_runner.py     the Keras networks and a case's step (`tf_reference.steps.TrainStep`)
    flops.py         FLOPs per image (torch.utils.flop_counter) and the machine's peak
    report.py        statistics, derived columns (speed-up, GFLOP/s, % of peak), the files
    plots.py         the figures
"""
