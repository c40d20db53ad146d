"""saliency_guide: class-saliency methods for image classifiers, in JAX and Flax NNX.

The public API, one name per line:
"""

from saliency_guide import data as data
from saliency_guide import methods as methods
from saliency_guide import models as models
from saliency_guide import plotting as plotting
from saliency_guide import scale as scale
from saliency_guide import training as training
from saliency_guide.data import load_mnist as load_mnist
from saliency_guide.models import CNN as CNN
from saliency_guide.models import MLP as MLP
from saliency_guide.models import GapCNN as GapCNN
from saliency_guide.scale import explain_dataset as explain_dataset
from saliency_guide.zoo import Pretrained as Pretrained
from saliency_guide.zoo import eval_data as eval_data
from saliency_guide.zoo import pretrained as pretrained

# The one place the version is written: the build reads it into the package metadata
# ([tool.hatch.version] in pyproject.toml). Bump it when cutting a release (README).
__version__ = "0.1.0"
