"""Port DenseNet weights between PyTorch and Keras: `python -m parity_tests.convert SRC DST`.

    python -m parity_tests.convert runs/x/version_0/checkpoints/last.ckpt model.keras
    python -m parity_tests.convert model.keras model.pt
    python -m parity_tests.convert w.weights.h5 model.ckpt --arch densenet_bc_100_k12 \\
        --num-classes 10

It needs both frameworks, so it sits above both (`parity_tests` -> `tf_reference` ->
`lightning_densenet`), as litgpt's converter scripts sit above its model. One job a module:

    layout.py   the name table (`tf_reference.names`) and the layout rules; shape-checked copies
    infer.py    the architecture: `--arch`, or read off the weights' names and shapes
    files.py    reading and writing .ckpt / .pt / .pth / .keras / .weights.h5
    port.py     `convert(src, dst)`: file to file, checked on a random batch
    cli.py      the command line
"""

# isort: off
import tf_reference  # noqa: F401  (first: loads Triton ahead of TensorFlow, see its __init__)

# isort: on
from parity_tests.convert.files import lightning_checkpoint, read_keras, read_torch
from parity_tests.convert.infer import infer_arch
from parity_tests.convert.layout import keras_to_torch, torch_to_keras
from parity_tests.convert.port import convert

__all__ = [
    "convert",
    "infer_arch",
    "keras_to_torch",
    "lightning_checkpoint",
    "read_keras",
    "read_torch",
    "torch_to_keras",
]
