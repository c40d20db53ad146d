"""Evaluating saliency maps: by measurement, not by how pretty a map looks.

* Deletion and insertion curves and their areas (Petsiuk et al., 2018), most or
  least relevant pixels first, with a random-ranking baseline and a paired
  verdict against it (:func:`compare_to_random`).
* Similarity of maps (Spearman rank correlation, SSIM, HOG) and the
  randomisation sanity checks of Adebayo et al. (2018): model parameters
  (cascading and independent; the randomised copies themselves) and data
  (shuffled labels), with a verdict by a stated rule.
* ROAR, remove and retrain (Hooker et al., 2019): the pixel rankings, then the
  retraining curves.
* Completeness of path methods (Sundararajan et al., 2017).

Every metric accepts maps ``(B, H, W, C)`` (per feature) and ``(B, H, W)``
(per pixel, the CAM family): a map is first reduced to one score per pixel by
summing over channels (:func:`pixel_scores`).
"""

# Shared.
from saliency_guide.metrics._common import COMPARISON_VERDICTS as COMPARISON_VERDICTS
from saliency_guide.metrics._common import RandomComparison as RandomComparison
from saliency_guide.metrics._common import compare_to_random as compare_to_random
from saliency_guide.metrics._common import comparison_rule as comparison_rule
from saliency_guide.metrics._common import mean_and_sem as mean_and_sem
from saliency_guide.metrics._common import pixel_scores as pixel_scores
from saliency_guide.metrics._common import rank_pixels as rank_pixels

# Completeness.
from saliency_guide.metrics._completeness import completeness_delta as completeness_delta

# Deletion and insertion.
from saliency_guide.metrics._deletion import ORDERS as ORDERS
from saliency_guide.metrics._deletion import SCORES as SCORES
from saliency_guide.metrics._deletion import SUBSTRATES as SUBSTRATES
from saliency_guide.metrics._deletion import Curves as Curves
from saliency_guide.metrics._deletion import auc as auc
from saliency_guide.metrics._deletion import deletion as deletion
from saliency_guide.metrics._deletion import higher_is_better as higher_is_better
from saliency_guide.metrics._deletion import insertion as insertion
from saliency_guide.metrics._deletion import make_substrate as make_substrate
from saliency_guide.metrics._deletion import perturbation_curves as perturbation_curves
from saliency_guide.metrics._deletion import random_attributions as random_attributions

# Randomisation tests.
from saliency_guide.metrics._randomization import RANDOMIZATION_MODES as RANDOMIZATION_MODES
from saliency_guide.metrics._randomization import (
    RANDOMIZATION_THRESHOLD as RANDOMIZATION_THRESHOLD,
)
from saliency_guide.metrics._randomization import (
    RANDOMIZATION_VERDICTS as RANDOMIZATION_VERDICTS,
)
from saliency_guide.metrics._randomization import RandomizationResult as RandomizationResult
from saliency_guide.metrics._randomization import RandomizationVerdict as RandomizationVerdict
from saliency_guide.metrics._randomization import data_randomization as data_randomization
from saliency_guide.metrics._randomization import model_randomization as model_randomization
from saliency_guide.metrics._randomization import parameter_layers as parameter_layers
from saliency_guide.metrics._randomization import (
    randomization_verdict as randomization_verdict,
)
from saliency_guide.metrics._randomization import randomize_layers as randomize_layers
from saliency_guide.metrics._randomization import randomized_models as randomized_models

# ROAR.
from saliency_guide.metrics._roar import ROARConfig as ROARConfig
from saliency_guide.metrics._roar import ROARRankings as ROARRankings
from saliency_guide.metrics._roar import ROARResult as ROARResult
from saliency_guide.metrics._roar import remove_top_pixels as remove_top_pixels
from saliency_guide.metrics._roar import roar as roar
from saliency_guide.metrics._roar import roar_rankings as roar_rankings

# Similarity of maps.
from saliency_guide.metrics._similarity import Similarity as Similarity
from saliency_guide.metrics._similarity import hog_features as hog_features
from saliency_guide.metrics._similarity import hog_similarity as hog_similarity
from saliency_guide.metrics._similarity import rank_correlation as rank_correlation
from saliency_guide.metrics._similarity import similarity as similarity
from saliency_guide.metrics._similarity import ssim as ssim
