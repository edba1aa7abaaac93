"""Settings of a GRN: its architecture (:class:`GRNConfig`) and its distillation (:class:`DistillConfig`).

Neither holds the size of the data: the number of class graphs K, of nodes N and the feature size D
come from the graphs a GRN is built for (:class:`vrx.graphs.scg.GraphShape`). This module imports
no torch, so that the command line can show the defaults cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, check

DEPENDENCIES = ("sigmoid", "softplus")


@dataclass(frozen=True)
class GRNConfig(Config):
    """The architecture of a GRN: everything that shapes the network besides the data's K, N, D."""

    input_proj: int | None = 64           # shared linear projection of the D-dim features; None: none
    hidden: tuple[int, ...] = (32, 32)    # node sizes of the graph-conv layers (their number = layers)
    edge_dim: int = 8                     # edge embedding size after each layer
    head_hidden: tuple[int, ...] = ()     # () : E is one linear layer (exact additive decomposition)
    class_specific_edges: bool = True     # False: one e_ji shared by all class graphs (ablation)
    use_edge_features: bool = True        # False: no edge features in messages or readout (ablation)
    message_passing: bool = True          # False: nodes are updated alone, no messages (ablation)
    dependency: str = "sigmoid"           # constraint on e_ji^c: sigmoid -> (0, 1), softplus -> (0, inf)
    standardize: bool = True              # standardise features with training-set mean and std
    # "block": class c's output reads only its own class graph (W[c, k] = 0 for k != c), so "why c?"
    # is answered by c's concepts, not by the absence of the others'; "full": every graph (the paper).
    head: str = "full"
    # Undetected nodes get a zero embedding, so a concept's contribution is measured against its
    # absence (a re-parametrisation of a linear head: the same functions, other contributions).
    zero_absent: bool = True

    def __post_init__(self) -> None:
        # Sizes given as lists (or numpy ints) become tuples of ints, as JSON gives them back.
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "head_hidden", tuple(int(h) for h in self.head_hidden))
        super().__post_init__()

    def validate(self) -> None:
        check((bool(self.hidden) and all(h >= 1 for h in self.hidden),
               f"GRNConfig: hidden must be a non-empty tuple of positive sizes, got {self.hidden}"),
              (all(h >= 1 for h in self.head_hidden),
               f"GRNConfig: head_hidden sizes must be positive, got {self.head_hidden}"),
              (self.input_proj is None or self.input_proj >= 1,
               f"GRNConfig: input_proj must be positive or None, got {self.input_proj}"),
              (self.edge_dim >= 1, f"GRNConfig: edge_dim must be positive, got {self.edge_dim}"),
              (self.head in ("full", "block"), f"GRNConfig: head must be 'full' or 'block', got {self.head!r}"),
              (self.head == "full" or not self.head_hidden,
               "GRNConfig: a block head is linear; it cannot have head_hidden layers"),
              (self.dependency in DEPENDENCIES,
               f"GRNConfig: dependency must be one of {DEPENDENCIES}, got {self.dependency!r}"))


@dataclass(frozen=True)
class DistillConfig(Config):
    """How a GRN is distilled from the classifier: loss, augmentation, optimiser, stopping and split."""

    temperature: float = 2.0              # softmax temperature T of the distillation loss (measured)
    mask_prob: float = 0.5                # probability of concept-masking augmentation per image
    # > 0: each batch also holds every image with one detected concept masked, and the loss adds
    # this weight x L1 between the GRN's and the teacher's change of class probabilities (T = 1)
    # under that masking: the GRN learns the classifier's response to a removed concept, not only
    # its answer (docs/grn.md). 0: the paper's augmentation alone (mask_prob).
    effect_weight: float = 4.0
    lr: float = 3e-3
    weight_decay: float = 1e-4
    epochs: int = 300
    batch_size: int = 64
    patience: int = 30                    # epochs without validation improvement before stopping
    lr_patience: int = 10                 # halve the learning rate after this many flat epochs; 0: never
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0                         # the split, the initial weights, batch order and masking

    def validate(self) -> None:
        check((0.0 <= self.mask_prob <= 1.0, f"DistillConfig: mask_prob must lie in [0, 1], got {self.mask_prob}"),
              (self.effect_weight >= 0, f"DistillConfig: effect_weight must be >= 0, got {self.effect_weight}"),
              (self.temperature > 0, f"DistillConfig: temperature must be > 0, got {self.temperature}"),
              (self.lr > 0 and self.weight_decay >= 0,
               f"DistillConfig: lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"),
              (self.epochs >= 1 and self.batch_size >= 1 and self.patience >= 1 and self.lr_patience >= 0,
               "DistillConfig: epochs, batch_size and patience must be >= 1, lr_patience >= 0"),
              (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
               and self.val_fraction + self.test_fraction < 1,
               (f"DistillConfig: val_fraction {self.val_fraction} and test_fraction {self.test_fraction} "
                "must be in [0, 1) and leave images for training")))
