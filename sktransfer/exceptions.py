"""Every warning and error class that sktransfer defines, importable from one place.

Each class lives beside the code that raises it; this module gathers them, as ``sklearn.exceptions`` does
for scikit-learn, so that a notebook can silence a warning it has read or catch an error by its class
without knowing which module raises it.

Examples
--------
>>> import warnings
>>> from sktransfer.exceptions import SettingsChangedWarning
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore", SettingsChangedWarning)  # read once, silenced in this block
...     warnings.warn("layer changed after fit", SettingsChangedWarning)
>>> issubclass(SettingsChangedWarning, UserWarning)
True
"""

from ._batch_statistics import BatchStatisticsWarning
from ._changed_settings import SettingsChangedWarning
from ._embedding_key import UnhashableModuleWarning, UnhashablePreprocessWarning
from ._image_folders import SkippedImageFilesWarning
from ._labelled_scoring import UnlabelledScoringWarning
from ._precision import SlowPrecisionWarning
from ._runtime import NetworkOutputError
from ._source_parameters import NewClassWarning, UnnamedColumnsWarning
from ._transferability_inputs import RenormalizedProbabilitiesWarning
from ._unused_settings import IgnoredSettingWarning
from .backbones import KeptParametersWarning, WeightsUnavailableError
from .distributed import PartitionError, PartitionFailedWarning, SlowWorkersWarning
from .domain_adaptation.domains import NoTargetDataWarning, TextLabelWarning, UnlabelledSourceRowsWarning
from .domain_adaptation.objectives import (
    PartialWithoutAlignmentWarning,
    PseudoLabelCollapseWarning,
    UntrainedPseudoLabelsWarning,
)
from .domain_adaptation.reweighting import FewEffectiveRowsWarning
from .domain_adaptation.shallow import PooledDomainsWarning
from .few_shot import ZeroVectorRowsWarning
from .images import AmbiguousLayoutWarning, GrayscaleStripsWarning
from .text_encoders import IncompleteCacheWarning, TextEncoderUnavailableError
from .texts import TruncatedTextsWarning
from .training import TrainingDivergedError

__all__ = [
    "AmbiguousLayoutWarning",
    "BatchStatisticsWarning",
    "FewEffectiveRowsWarning",
    "GrayscaleStripsWarning",
    "IgnoredSettingWarning",
    "IncompleteCacheWarning",
    "KeptParametersWarning",
    "NetworkOutputError",
    "NewClassWarning",
    "NoTargetDataWarning",
    "PartialWithoutAlignmentWarning",
    "PartitionError",
    "PartitionFailedWarning",
    "PooledDomainsWarning",
    "PseudoLabelCollapseWarning",
    "RenormalizedProbabilitiesWarning",
    "SettingsChangedWarning",
    "SkippedImageFilesWarning",
    "SlowPrecisionWarning",
    "SlowWorkersWarning",
    "TextEncoderUnavailableError",
    "TextLabelWarning",
    "TrainingDivergedError",
    "TruncatedTextsWarning",
    "UnhashableModuleWarning",
    "UnhashablePreprocessWarning",
    "UnlabelledScoringWarning",
    "UnlabelledSourceRowsWarning",
    "UnnamedColumnsWarning",
    "UntrainedPseudoLabelsWarning",
    "WeightsUnavailableError",
    "ZeroVectorRowsWarning",
]
