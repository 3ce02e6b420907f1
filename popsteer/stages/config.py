"""The typed configs of the pipeline's stages: the internal API of PopSteer.

Each stage function of ``popsteer.stages`` takes one of these; the CLI builds them from its
flags (``popsteer.app.flags``: flag names, defaults and ``--help`` come from here) and the
sweep file embeds them (``popsteer.platform.spec``), so every default is stated once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from popsteer.data.config import DataConfig
from popsteer.errors import PopSteerError
from popsteer.models.config import TrainConfig
from popsteer.models.registry import get_model
from popsteer.sae.model import SAEConfig
from popsteer.stages.config_checks import SPLITS, check_device, check_grid, check_import_out, check_probe
from popsteer.stages.config_learned import LearnedConfig
from popsteer.steering.grid import DEFAULT_ALPHAS, DEFAULT_NS
from popsteer.eval.tradeoff import MAX_NDCG_DROP
from popsteer.steering.steer import DEFAULT_ALPHA, DEFAULT_NUM_NEURONS, check_strength
from popsteer.util.configs import CONFIG, DEFAULT_SEED, check_at_most, check_choices, check_seeds

ALPHA_MAX = 1e3
"""The largest steering strength alpha (a sigma multiple; the paper's grid stops at 4)."""
N_MAX = 1 << 20
"""The most steered neurons N a config accepts (a point is also refused above its SAE's width)."""


@dataclass
class Workspace:
    """Where data is read and artifacts go."""

    __pydantic_config__ = CONFIG

    data_dir: str = "datasets"
    """Folder holding <dataset>/<dataset>.inter (ml-100k falls back to the embedded copy); analyses are kept in
    <data-dir>/<dataset>/."""
    out_dir: str = "saved"
    """Where checkpoints and encoded representations go."""
    allowed_roots: list[str] = field(default_factory=list)
    """More folders a checkpoint header may name (besides the project, the data and output folders and
    $POPSTEER_ALLOWED_ROOTS): a sweep passes its driver's, as its workers do not share its environment."""


@dataclass
class EncodeConfig:
    """How user representations are encoded for the SAE, the analysis and the evaluation (cached per checkpoint)."""

    __pydantic_config__ = CONFIG

    dir: str | None = None
    """Root of the encoded folders (shared storage on a cluster); default <out-dir>/encoded."""
    prefix_stride: int = 10
    """The SAE's training inputs (one per training prefix) come from all-position passes over windows with this
    stride: prefixes of <= max_len items are exact, longer ones see >= max_len - stride + 1 items (1 = exactly
    RecBole's per-prefix inputs, ~max_len x slower); in [1, 10000]."""
    sasrec_train_mode: bool = False
    """QUIRK of the reference: encode the SAE's training inputs with SASRec's dropout on."""
    profile_seed: int = DEFAULT_SEED
    """Seed of the synthetic popular (seed) and unpopular (seed + 1) profiles of the analysis, in [0, 2**32 - 2]."""
    batch_size: int = 4096
    """Sequences per forward pass, in [1, 1048576]."""
    block_rows: int = 8192
    """Input rows per block (the unit of work of one encoder), in [1, 67108864]."""

    def __post_init__(self) -> None:
        for name in ("prefix_stride", "batch_size", "block_rows"):
            if getattr(self, name) < 1:
                flag = "--prefix-stride" if name == "prefix_stride" else f"encode.{name}"
                raise PopSteerError(f"{flag} must be >= 1, got {getattr(self, name)}")
        check_at_most(self, {"prefix_stride": 10_000, "batch_size": 1 << 20, "block_rows": 1 << 26}, "encode.")
        check_seeds(self, "profile_seed", prefix="encode.")


@dataclass
class RecommenderConfig:
    """Stage 1: train the base recommender on a dataset."""

    __pydantic_config__ = CONFIG

    dataset: str = "ml-100k"
    """Dataset name: <data-dir>/<dataset>/<dataset>.inter (ml-100k is embedded)."""
    model: str = "sasrec"
    """The base recommender (popsteer.models.registry): sasrec, gru4rec, bert4rec or lightgcn."""
    small: bool = False
    """A CI-sized model (SASRec, BERT4Rec: 1 layer, 1 head, hidden 32, inner 64; GRU4Rec: d 32, hidden 64;
    LightGCN: d 32; max length 20)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    where: Workspace = field(default_factory=Workspace)

    def __post_init__(self) -> None:
        get_model(self.model)  # an unknown name is refused now

    def architecture(self):
        """The model's architecture config (its RecBole defaults, or the CI-sized one)."""
        return get_model(self.model).architecture(self.small)


@dataclass
class ImportConfig:
    """Stage 1 (alternative): import a foreign RecBole SASRec checkpoint (a pickle)."""

    __pydantic_config__ = CONFIG

    path: str
    """RecBole .pth checkpoint."""
    dataset: str
    """Our dataset the checkpoint was trained on."""
    trust_pickle: bool = False
    """Allow unpickling: only for files from a source you trust."""
    out: str | None = None
    """Output .safetensors path; default <out-dir>/SASRec-imported-<stem>-<dataset>.safetensors."""
    reference_dir: str | None = None
    """Folder with the authors' item files used to map their item ids."""
    model: str | None = None
    """Refuse a checkpoint of another model (default: the model its config names)."""
    where: Workspace = field(default_factory=Workspace)

    def __post_init__(self) -> None:
        check_import_out(self.path, self.out)


@dataclass
class SAEStageConfig:
    """Stage 3: train a TopK SAE on a recommender checkpoint's user representations."""

    __pydantic_config__ = CONFIG

    base: str
    """The recommender checkpoint (.safetensors)."""
    sae: SAEConfig = field(default_factory=SAEConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    where: Workspace = field(default_factory=Workspace)
    device: str = "cpu"
    """Where the SAE trains (cpu, cuda or cuda:N)."""

    def __post_init__(self) -> None:
        check_device(self.device)


@dataclass
class SAERef:
    """An SAE checkpoint and the folders it is read with."""

    __pydantic_config__ = CONFIG

    path: str
    """The SAE checkpoint (.safetensors)."""
    dataset: str | None = None
    """Refuse an SAE of another dataset."""
    where: Workspace = field(default_factory=Workspace)
    encode: EncodeConfig = field(default_factory=EncodeConfig)


@dataclass
class AnalysisConfig:
    """Stage 4: Cohen's d of every SAE neuron from a popular and an unpopular group of inputs."""

    __pydantic_config__ = CONFIG

    ref: SAERef
    seed: int = DEFAULT_SEED
    """Seed of the synthetic profiles (popular: seed, unpopular: seed + 1), in [0, 2**32 - 2]."""
    probe: Literal["auto", "synthetic", "users"] = "auto"
    """synthetic: popular-only vs unpopular-only profiles; users: the real users whose history has the
    highest vs the lowest mean item popularity; auto: synthetic where the model can encode a profile."""
    user_share: float = 0.1
    """--probe users: the share of users in each group (top and bottom), in (0, 0.5]."""
    top_items: int = 10
    """Items kept per neuron in neuron_top_items.csv (those whose one-item profile activates it most), in
    [1, 10000]."""
    dataset_copy: bool = True
    """Also write the analysis files (cohens_d.csv, row_stats_*.csv) to <data-dir>/<dataset>/, where the original
    codebase reads them."""

    def __post_init__(self) -> None:
        if not 0 < self.user_share <= 0.5:
            raise PopSteerError(f"user_share must be in (0, 0.5], got {self.user_share}")
        if not 1 <= self.top_items <= 10_000:
            raise PopSteerError(f"top_items must be in [1, 10000], got {self.top_items}")
        check_seeds(self, "seed")


@dataclass
class GridConfig:
    """Stage 5: the steering grid (docs/METHOD.md §4), scored on every user of each split."""

    __pydantic_config__ = CONFIG

    ns: list[int] = field(default_factory=lambda: list(DEFAULT_NS))
    """Numbers of steered neurons N (capped at the SAE's width, duplicates dropped)."""
    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    """Steering strengths alpha."""
    splits: list[Literal["valid", "test"]] = field(default_factory=lambda: list(SPLITS))
    """Splits every point is scored on."""
    swap_sigma: bool = False
    """QUIRK of the reference: boost with the popular group's sigma, suppress with the unpopular one's."""
    max_ndcg_drop: float = MAX_NDCG_DROP
    """The validation pick keeps the relative NDCG@10 drop against SASRec within this."""
    variant: Literal["replace", "preserve", "learned"] = "replace"
    """replace: the recommender scores the steered reconstruction (the paper); preserve: x + (decode(steer(h)) - decode(h)), keeping the SAE's error; learned: the error-preserving form with delta fitted per lam (``learned``), N and alpha unused."""
    learned: LearnedConfig = field(default_factory=LearnedConfig)
    """The learned variant's fits (its grid: one point per lam)."""
    alpha_unpops: list[float] | None = None
    """Separate strengths for the boosted (unpopular) neurons: the grid is N x alpha (suppressed, popular) x these."""

    @property
    def tag(self) -> str:
        """'' for the paper's grid, else what the grid's result files are suffixed with."""
        if self.variant == "learned":
            return "-learned"
        return ("-preserve" if self.variant == "preserve" else "") + ("-2d" if self.alpha_unpops is not None else "")

    def __post_init__(self) -> None:
        check_grid(self, N_MAX, ALPHA_MAX)


@dataclass
class SteerConfig:
    """One steering point on one split, beside SASRec and the unsteered SAE (the seed's --test_popsteer)."""

    __pydantic_config__ = CONFIG

    ref: SAERef
    num_neurons: int = DEFAULT_NUM_NEURONS
    """N, the number of steered neurons (the top N by |Cohen's d|), in [1, the SAE's width]."""
    alpha: float = DEFAULT_ALPHA
    """Steering strength alpha, in [0, 1000]."""
    split: Literal["valid", "test"] = "test"
    """Split to score."""
    swap_sigma: bool = False
    """QUIRK of the reference: boost with the popular group's sigma, suppress with the unpopular one's."""

    def __post_init__(self) -> None:
        check_choices(self)
        check_strength(self.num_neurons, self.alpha)
        check_at_most(self, {"num_neurons": N_MAX, "alpha": ALPHA_MAX})


@dataclass
class GridStageConfig:
    """Stage 5: an SAE's steering grid on every user of each split, picked on validation (the seed's
    --tune_popsteer reports the pick on test)."""

    __pydantic_config__ = CONFIG

    ref: SAERef
    grid: GridConfig = field(default_factory=GridConfig)


@dataclass
class BaselinesConfig:
    """Stage 6: the post-processing re-rankers on the base recommender's scores, tuned on validation."""

    __pydantic_config__ = CONFIG

    seed: int = DEFAULT_SEED
    """Seed of the random re-ranker, in [0, 2**32 - 2]."""
    tiny: bool = False
    """CI-sized grids: the first, middle and last point of each re-ranker's grid."""
    max_ndcg_drop: float = MAX_NDCG_DROP
    """The validation pick keeps the relative NDCG@10 drop against SASRec within this, in [0, 1]."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_ndcg_drop <= 1:
            raise PopSteerError(f"max_ndcg_drop must be in [0, 1], got {self.max_ndcg_drop}")
        check_seeds(self, "seed")


@dataclass
class PipelineConfig:
    """Every stage on one dataset: recommender -> SAE -> analysis -> steering -> tuned steering."""

    __pydantic_config__ = CONFIG

    recommender: RecommenderConfig = field(default_factory=RecommenderConfig)
    sae: SAEConfig = field(default_factory=SAEConfig)
    num_neurons: int = DEFAULT_NUM_NEURONS
    """N of the steering point reported on test, in [1, 1048576] (capped at the SAE's width)."""
    alpha: float = DEFAULT_ALPHA
    """Alpha of the steering point reported on test, in [0, 1000]."""
    seed: int = DEFAULT_SEED
    """Seed of the recommender's training and of the analysis' synthetic profiles, in [0, 2**32 - 2]."""
    probe: Literal["auto", "synthetic", "users"] = "auto"
    """How the analysis finds popularity neurons (AnalysisConfig.probe)."""

    def __post_init__(self) -> None:
        check_choices(self)
        check_strength(self.num_neurons, self.alpha)
        check_at_most(self, {"num_neurons": N_MAX, "alpha": ALPHA_MAX})
        check_seeds(self, "seed")
        check_probe(self.recommender.model, self.probe)
