"""S²FT: structured sparse fine-tuning of LLMs (Yang et al., NeurIPS 2024, arXiv 2412.06289).

"Select sparsely, compute densely": a few FFN channels and attention heads per block are
selected, the coupled weights co-permuted so they are contiguous, and only those dense slices
train, with partial backprop (only their activation slices are saved, only their gradients
computed). The update is an adapter ``(indices, delta)`` that fuses into the weights, switches in
place and serves mixed batches. A PEFT-style API::

    from beyondbp.s2ft import S2FTConfig, get_model

    model = get_model(base, S2FTConfig(targets={"down_proj": 0.03}))  # the released recipe
    model.print_trainable_parameters()
    ...train model.trainable_parameters()...
    model.save_adapter("adapters/arith")
    model.load_adapter("adapters/arith", "arith"); model.switch("arith")

The learning rule ``s2ft`` (:mod:`beyondbp.rules.s2ft`) trains it on the ``lm`` tasks.
"""

from beyondbp.s2ft.config import TARGETS, S2FTConfig
from beyondbp.s2ft.layer import S2Linear
from beyondbp.s2ft.model import S2FTModel, get_model, select_units

__all__ = ["TARGETS", "S2FTConfig", "S2FTModel", "S2Linear", "get_model", "select_units"]
