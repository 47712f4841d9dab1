"""Random forest (the seed's 0.40)."""

from sklearn.ensemble import RandomForestClassifier

from fer_lab.models import register
from fer_lab.models.classical import ClassicalClassifier


@register("forest")
class ForestClassifier(ClassicalClassifier):
    """A random forest using every core."""

    def __init__(self, features="pca", pca_components=0.95, hog_cell=8, n_estimators=200,
                 max_features="sqrt", min_samples_leaf=1, class_weight=None, seed=0):
        self.features = features
        self.pca_components = pca_components
        self.hog_cell = hog_cell
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.class_weight = class_weight
        self.seed = seed

    def _classifier(self):
        return RandomForestClassifier(n_estimators=self.n_estimators,
                                      max_features=self.max_features,
                                      min_samples_leaf=self.min_samples_leaf,
                                      class_weight=self.class_weight, n_jobs=-1,
                                      random_state=self.seed)
